// A developer reading the REST reference, in headless Chromium (Debian's, driven by
// playwright-core): open /api/docs, wait for Swagger UI to render the operations of
// /api/openapi.json, expand GET /api/customers/{id}/invoices and read what it shows. Every
// request the page makes is recorded; any that is not for 127.0.0.1 is aborted and reported.
//
// env: GATEWAY_URL, CHROMIUM (executable), SCREENSHOT (PNG path)
// stdout: one JSON report (the Python test asserts on it)
'use strict';

const { openPage, runReporting } = require('./chromium.cjs');

const GATEWAY_URL = process.env.GATEWAY_URL;
const report = { consoleErrors: [] };

async function main() {
  const { browser, page } = await openPage(report, { width: 1400, height: 1600 });
  try {
    page.on('console', (message) => {
      if (message.type() === 'error') report.consoleErrors.push(message.text());
    });

    const response = await page.goto(`${GATEWAY_URL}/api/docs`);
    report.status = response.status();
    report.csp = response.headers()['content-security-policy'] || null;
    await page.waitForSelector('.opblock', { timeout: 30000 });
    await page.waitForLoadState('networkidle');
    report.title = await page.title();
    report.apiTitle = (await page.locator('.info .title').first().innerText()).trim();
    report.operations = await page.$$eval('.opblock-summary', (blocks) =>
      blocks.map((block) => {
        const method = block.querySelector('.opblock-summary-method');
        const path = block.querySelector('.opblock-summary-path');
        return `${method ? method.textContent.trim() : '?'} ${
          path ? path.getAttribute('data-path') || path.textContent.trim() : '?'
        }`;
      }),
    );

    // expand one operation: its parameters and responses come from the generated document
    const invoices = page.locator('#operations-default-RestCustomerInvoices');
    await invoices.locator('.opblock-summary').click();
    await invoices.locator('.parameters').first().waitFor();
    report.invoiceParameters = await invoices.locator('.parameter__name').evaluateAll((names) =>
      names.map((name) => name.textContent.replace(/[\s\u00a0]*\*.*$/, '').trim()),
    );
    report.invoiceResponses = await invoices
      .locator('.response .response-col_status')
      .evaluateAll((cells) =>
      cells.map((cell) => cell.textContent.trim()),
    );

    await page.screenshot({ path: process.env.SCREENSHOT, fullPage: false });
    report.screenshot = process.env.SCREENSHOT;
  } finally {
    await browser.close();
  }
}

runReporting(report, main);
