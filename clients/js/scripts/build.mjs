// Builds what the hub serves: dist/actionhub.mjs (ES module) and dist/actionhub.js (classic
// script setting window.ActionHub), both minified, and prints the min+gzip size against the
// 8 KB budget. Output is deterministic, so the committed dist/ matches a fresh build.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const BUDGET = 8 * 1024;
const common = {
  entryPoints: [root + 'src/actionhub.mjs'],
  bundle: true,
  minify: true,
  target: 'es2020',
  legalComments: 'none',
  logLevel: 'warning',
};
const banner = '/* actionhub browser SDK, Apache-2.0 */';
await build({ ...common, format: 'esm', outfile: root + 'dist/actionhub.mjs', banner: { js: banner } });
await build({
  ...common,
  format: 'iife',
  globalName: 'ActionHub',
  outfile: root + 'dist/actionhub.js',
  banner: { js: banner },
  footer: { js: 'window.ActionHub=ActionHub.default;' },
});

let over = false;
for (const file of ['dist/actionhub.mjs', 'dist/actionhub.js']) {
  const bytes = readFileSync(root + file);
  const gz = gzipSync(bytes, { level: 9 }).length;
  console.log(`SDK size: ${file} ${bytes.length} bytes minified, ${gz} bytes min+gzip (budget ${BUDGET})`);
  if (gz > BUDGET) over = true;
}
if (over) {
  console.error('SDK size is over the 8 KB min+gzip budget');
  process.exit(1);
}
