// The account pages and the console in a real browser, for the end-to-end
// tests: Debian's Chromium, headless, driven by playwright-core through the
// page as a person uses it (labels, roles, visible text). The test sends
// one JSON request per line on stdin and reads one JSON answer per line on
// stdout; the first line out is {"ready": true}. The browser has a
// virtual platform authenticator, for passkeys.
//
//   {"op": "goto", "url": …}                          open a page
//   {"op": "fill", "label": …, "value": …}            type into a labelled field
//   {"op": "click", "role": …, "name": …, "nth": n}   press a button or link
//   {"op": "click_text", "text": …}                   press what shows the text
//   {"op": "see", "text": …, "exact": bool}           wait until the text (or an element of exactly it) shows
//   {"op": "text", "selector": …}                     the text of an element
//   {"op": "count", "selector": …}                    how many elements match
//   {"op": "screenshot", "path": …, "full": bool}     the page (or its top) as PNG
//   {"op": "url"}                                     where the page is
//
// Every answer is {"ok": …} or {"error": …}; waits give up after 15 s.

import { addAuthenticator, answerLines, launch } from './driver.mjs';

const WAIT = { timeout: 15000 };

const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
const page = await context.newPage();
const cdp = await context.newCDPSession(page);
await cdp.send('WebAuthn.enable');
await addAuthenticator(cdp);
const problems = [];
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => message.type() === 'error' && problems.push(`console: ${message.text()}`));

async function handle(request) {
  switch (request.op) {
    case 'goto':
      await page.goto(request.url);
      return { ok: page.url() };
    case 'fill':
      await page.getByLabel(request.label, { exact: true }).fill(request.value, WAIT);
      return { ok: true };
    case 'click':
      await page
        .getByRole(request.role, { name: request.name, exact: true })
        .nth(request.nth ?? 0)
        .click(WAIT);
      return { ok: true };
    case 'click_text':
      await page.getByText(request.text, { exact: true }).first().click(WAIT);
      return { ok: true };
    case 'see':
      await page.getByText(request.text, { exact: request.exact === true }).first().waitFor({ state: 'visible', ...WAIT });
      return { ok: true };
    case 'text':
      return { ok: await page.locator(request.selector).first().innerText(WAIT) };
    case 'count':
      return { ok: await page.locator(request.selector).count() };
    case 'screenshot':
      await page.screenshot({ path: request.path, fullPage: request.full !== false });
      return { ok: request.path };
    case 'url':
      return { ok: page.url() };
    default:
      return { error: `unknown op ${request.op}` };
  }
}

process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
await answerLines(
  handle,
  (error) => `${String(error).split('\n')[0]}${problems.length ? ` (${problems.join('; ')})` : ''}`,
);
await browser.close();
