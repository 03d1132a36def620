// Builds what the hub serves and the package ships, from src/:
// - dist/actionhub.mjs: ES module, the client and every adapter as named exports (no side
//   effects, so a bundler keeps only what is imported); served as /sdk/actionhub.mjs;
// - dist/actionhub.cjs: the same for `require('actionhub')`;
// - dist/actionhub.js: classic script (IIFE) setting window.ActionHub and starting the
//   drop-ins its tag or URL asks for (src/script.mjs); served as /sdk/actionhub.js;
// each minified with a source map. Then it measures, min+gzip, what a page that imports
// only the client gets (the core, budget 8 KB) and what each adapter adds to it.
// Then it copies the console's charting library, uPlot (a devDependency, pinned in
// package-lock.json), into console/vendor/, where the hub embeds it, and prints its size.
// Output is deterministic, so the committed dist/ and console/vendor/ match a fresh build.
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const BUDGET = 8 * 1024;
const common = {
  bundle: true,
  minify: true,
  target: 'es2020',
  legalComments: 'none',
  logLevel: 'warning',
  sourcemap: true,
  banner: { js: '/* actionhub browser SDK, Apache-2.0 */' },
};
await build({ ...common, entryPoints: [root + 'src/index.mjs'], format: 'esm', outfile: root + 'dist/actionhub.mjs' });
await build({ ...common, entryPoints: [root + 'src/index.mjs'], format: 'cjs', platform: 'neutral', outfile: root + 'dist/actionhub.cjs' });
await build({
  ...common,
  entryPoints: [root + 'src/script.mjs'],
  format: 'iife',
  globalName: 'ActionHub',
  outfile: root + 'dist/actionhub.js',
  footer: { js: 'window.ActionHub=ActionHub.default;' },
});

/** The min+gzip bytes of a page's bundle that imports `names` from the package's module. */
async function importing(names) {
  const out = await build({
    ...common,
    sourcemap: false,
    write: false,
    format: 'esm',
    stdin: { contents: `export { ${names.join(', ')} } from './dist/actionhub.mjs';`, resolveDir: root },
  });
  return gzipSync(out.outputFiles[0].contents, { level: 9 }).length;
}

const core = await importing(['ActionHub']);
console.log(`SDK size: core (ActionHub alone) ${core} bytes min+gzip (budget ${BUDGET})`);
for (const adapter of ['installAc', 'installGt', 'installTransactional', 'attachGenesysWidgets']) {
  console.log(`SDK size: + ${adapter} ${(await importing(['ActionHub', adapter])) - core} bytes`);
}
const all = gzipSync(readFileSync(root + 'dist/actionhub.js'), { level: 9 }).length;
console.log(`SDK size: dist/actionhub.js (classic script, everything) ${all} bytes min+gzip`);
if (core > BUDGET) {
  console.error('SDK size: the core is over the 8 KB min+gzip budget');
  process.exit(1);
}

// uPlot as the package builds it (minified classic script setting window.uPlot, and its
// stylesheet): copied, not rebundled, so the console serves the published bytes.
const vendor = root + '../../console/vendor/';
for (const [from, to] of [['uPlot.iife.min.js', 'uplot.min.js'], ['uPlot.min.css', 'uplot.min.css']]) {
  copyFileSync(root + 'node_modules/uplot/dist/' + from, vendor + to);
  const bytes = readFileSync(vendor + to);
  console.log(`console: vendor/${to} ${bytes.length} bytes, ${gzipSync(bytes, { level: 9 }).length} min+gzip`);
}

// The declarations, from src/'s JSDoc (tsconfig.json): tsc checks the code against its
// types and writes dist/types. A class's underscored members are the SDK's internals; tsc
// keeps JavaScript's in the declarations, so they are dropped here.
execFileSync(root + 'node_modules/.bin/tsc', ['-p', root + 'tsconfig.json'], { stdio: 'inherit' });
for (const file of readdirSync(root + 'dist/types')) {
  const path = root + 'dist/types/' + file;
  writeFileSync(path, withoutInternals(readFileSync(path, 'utf8')));
}

/** `text` without class members named `_...` (and their doc comments), however many lines each spans. */
function withoutInternals(text) {
  const out = [];
  let depth = 0;
  let skipping = false;
  for (const line of text.split('\n')) {
    if (!skipping && /^ {4}(private )?_\w+\??[;:(<]/.test(line)) {
      skipping = true;
      // The member's own doc comment goes with it.
      if (/^ {4}(\/\*\*.*)?\*\/$/.test(out.at(-1) || '')) while (out.length && !out.pop().startsWith('    /**'));
    }
    if (!skipping) {
      out.push(line);
      continue;
    }
    for (const ch of line) depth += '{(['.includes(ch) ? 1 : '})]'.includes(ch) ? -1 : 0;
    if (depth <= 0 && line.trimEnd().endsWith(';')) {
      skipping = false;
      depth = 0;
    }
  }
  return out.join('\n');
}
