// What the browser suites share: headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; never a browser download), and a small static server on its own port that
// plays the customer's website, so the SDK runs cross-origin as it would on a real site.
import { createServer } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
export const root = fileURLToPath(new URL('../../../', import.meta.url));
// The examples name this hub; the site serves them naming the test's hub instead.
const EXAMPLE_HUB = 'https://hub.example.com';

export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * Serves `pages` (path -> HTML, `HUB` replaced by the hub's address), `/examples/<file>`
 * (examples/browser, with the example hub replaced), `/demo/`, and any `routes`
 * (path -> (req, res) handler). `hub()` is read at each request, so a test may swap hubs.
 */
export async function startSite({ hub, pages = {}, routes = {} }) {
  const html = (res, text) => res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(text);
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/favicon.ico') return res.writeHead(204).end();
    if (routes[path]) return routes[path](req, res);
    if (pages[path]) return html(res, pages[path].replaceAll('HUB', hub().http));
    if (path === '/demo/') return html(res, readFileSync(root + 'examples/browser/index.html'));
    const example = path.match(/^\/examples\/([\w-]+\.html)$/);
    if (example && existsSync(root + 'examples/browser/' + example[1])) {
      return html(res, readFileSync(root + 'examples/browser/' + example[1], 'utf8').replaceAll(EXAMPLE_HUB, hub().http));
    }
    res.writeHead(404).end();
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: (path) => `http://127.0.0.1:${server.address().port}${path}`,
    close: () => new Promise((r) => server.close(r)),
  };
}

/**
 * A fresh browser context and page. `problems` collects uncaught errors, unhandled
 * rejections and console errors; `warnings` the console's warnings and notes.
 */
export async function newPage(browser, options = {}) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  const problems = [];
  const notes = [];
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(m.text());
    if (m.type() === 'warning' || m.type() === 'info') notes.push(m.text());
  });
  await page.addInitScript(() => window.addEventListener('unhandledrejection', (e) => console.error('unhandled rejection: ' + (e.reason && e.reason.message))));
  return { context, page, problems, notes };
}
