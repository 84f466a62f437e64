// A developer in GraphiQL, in headless Chromium (Debian's, driven by playwright-core):
// open /graphql, look at the docs explorer, put a bearer token in the Headers tab, run the
// preloaded PortalHome query and read the answer off the page. Every request the page makes
// is recorded; any that is not for 127.0.0.1 is aborted and reported.
//
// env: GATEWAY_URL, TOKEN, CHROMIUM (executable), SCREENSHOT (PNG path)
// stdout: one JSON report (the Python test asserts on it)
'use strict';

const { openPage, runReporting } = require('./chromium.cjs');

const GATEWAY_URL = process.env.GATEWAY_URL;
const TOKEN = process.env.TOKEN;
const report = { graphqlResponses: [] };

// the text of the CodeMirror 5 editor inside `selector`, as GraphiQL holds it
function editorValue(page, selector) {
  return page.$eval(selector, (element) => element.CodeMirror.getValue());
}

async function main() {
  const { browser, page } = await openPage(report, { width: 1400, height: 1000 });
  try {
    page.on('response', (response) => {
      const request = response.request();
      if (request.method() !== 'POST' || !response.url().endsWith('/graphql')) return;
      let body = {};
      try {
        body = JSON.parse(request.postData() || '{}');
      } catch {
        // not JSON: recorded with no operation name
      }
      report.graphqlResponses.push({
        status: response.status(),
        operationName: body.operationName || null,
        introspection: /__schema/.test(body.query || ''),
        authorization: request.headers().authorization || null,
      });
    });

    await page.goto(`${GATEWAY_URL}/graphql`);
    const queryEditor = '.graphiql-query-editor .CodeMirror';
    await page.waitForSelector(queryEditor);
    await page.waitForLoadState('networkidle');
    report.title = await page.title();
    report.preloadedQuery = await editorValue(page, queryEditor);

    // what the docs explorer shows before any token is set
    await page.getByRole('button', { name: 'Show Documentation Explorer' }).click();
    const docs = page.locator('.graphiql-doc-explorer');
    await docs.getByText(/Root Types|Error fetching schema/).first().waitFor();
    report.docsBeforeToken = await docs.innerText();
    await page.getByRole('button', { name: 'Hide Documentation Explorer' }).click();

    // the Headers tab: replace what is there, as a developer pasting the printed token would
    await page.getByRole('button', { name: 'Headers', exact: true }).click();
    const headersEditor = '.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror';
    await page.click(headersEditor);
    await page.keyboard.press('Control+A');
    await page.keyboard.insertText(JSON.stringify({ Authorization: `Bearer ${TOKEN}` }, null, 2));
    report.headersEditor = await editorValue(page, headersEditor);

    const answered = page.waitForResponse(
      (response) =>
        response.url().endsWith('/graphql') &&
        (response.request().postData() || '').includes('PortalHome'),
    );
    await page.getByRole('button', { name: 'Execute query (Ctrl-Enter)' }).click();
    await answered;
    const resultEditor = '.graphiql-response .CodeMirror';
    await page.waitForFunction((selector) => {
      const element = document.querySelector(selector);
      return element && element.CodeMirror.getValue().trim().startsWith('{');
    }, resultEditor);
    report.result = JSON.parse(await editorValue(page, resultEditor));
    report.resultOnScreen = await page.locator('.graphiql-response').innerText();

    await page.screenshot({ path: process.env.SCREENSHOT });
    report.screenshot = process.env.SCREENSHOT;
  } finally {
    await browser.close();
  }
}

runReporting(report, main);
