// Headless Chromium (Debian's, driven by playwright-core) for the page tests, kept on this
// machine: every request a page makes is recorded in `report.requests`; any that is not
// for 127.0.0.1 is aborted and listed in `report.external`; page errors in
// `report.pageErrors`.
'use strict';

const { chromium } = require('playwright-core');

function isLocal(url) {
  const { protocol, hostname } = new URL(url);
  if (protocol === 'data:' || protocol === 'blob:' || protocol === 'about:') return true;
  return hostname === '127.0.0.1';
}

// the browser (executable: $CHROMIUM) and one page of a fresh context of `viewport`
async function openPage(report, viewport) {
  report.requests = report.requests || [];
  report.external = report.external || [];
  report.pageErrors = report.pageErrors || [];
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    chromiumSandbox: false,
    args: [
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      // nothing but loopback resolves, so a stray request cannot leave the machine either
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    ],
  });
  const context = await browser.newContext({ viewport });
  const seen = (url) => {
    report.requests.push(url);
    if (!isLocal(url) && !report.external.includes(url)) report.external.push(url);
  };
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLocal(url)) return route.continue();
    seen(url);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.on('request', (request) => seen(request.url()));
  page.on('websocket', (socket) => seen(socket.url()));
  page.on('pageerror', (error) => report.pageErrors.push(String(error)));
  return { browser, page };
}

// runs `main`, then prints `report` as one JSON line (with `failure` if main threw)
function runReporting(report, main) {
  main()
    .catch((error) => {
      report.failure = error && error.stack ? error.stack : String(error);
    })
    .finally(() => {
      process.stdout.write(JSON.stringify(report) + '\n');
    });
}

module.exports = { isLocal, openPage, runReporting };
