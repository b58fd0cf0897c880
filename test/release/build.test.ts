/**
 * The compiled build (`npm run build`, scripts/build.ts) as it ships: build/ and bin/raven.mjs copied
 * into a folder with no node_modules and no src/, run with plain node. Nothing there can load tsx or
 * a package, so a run that works is compiled code, self-contained. Built into a folder of this test's
 * own, so a concurrent `npm run build` of the checkout is left alone.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ravenCommand } from '../../src/platform/raven-command.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

const tmp = mkdtempSync(join(tmpdir(), 'raven-build-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

/** The shipped layout: <dir>/bin/raven.mjs and <dir>/build/. */
const shipped = join(tmp, 'shipped');

/** Plain node: no NODE_OPTIONS (which could carry --import tsx) and no inherited loader flags. */
function node(args: readonly string[], cwd = ROOT): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const r = spawnSync(process.execPath, args, { cwd, env, encoding: 'utf8', timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

test.before(() => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/build.ts', '--out', join(shipped, 'build')], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, `build failed:\n${r.stdout}${r.stderr}`);
  mkdirSync(join(shipped, 'bin'));
  cpSync(join(ROOT, 'bin', 'raven.mjs'), join(shipped, 'bin', 'raven.mjs'));
});

test('raven --version and -v print package.json version from the build, with plain node and nothing beside it', () => {
  for (const flag of ['--version', '-v']) {
    const r = node([join(shipped, 'bin', 'raven.mjs'), flag]);
    assert.equal(r, { status: 0, stdout: `${VERSION}\n`, stderr: '' }, flag);
  }
  assert.equal(node([join(shipped, 'build', 'raven.js'), '--version']), { status: 0, stdout: `${VERSION}\n`, stderr: '' });
});

test('the build validates the seed topology and synthesizes dist/ byte for byte', () => {
  const v = node([join(shipped, 'bin', 'raven.mjs'), 'validate', 'topologies/seed.yaml']);
  assert.equal(v, { status: 0, stdout: 'topologies/seed.yaml: ok (cluster seed, 3 regions)\n', stderr: '' });
  const out = join(tmp, 'dist');
  const s = node([join(shipped, 'build', 'raven.js'), 'synth', 'topologies', '--out', out]);
  assert.is(s.status, 0, s.stderr);
  const expected = files(join(ROOT, 'dist'));
  assert.equal(files(out), expected);
  for (const f of expected) assert.ok(readFileSync(join(out, f)).equals(readFileSync(join(ROOT, 'dist', f))), `${f} differs from dist/`);
});

test('the build imports only its own files and Node built-ins: no TypeScript, no package', () => {
  const builtins = new Set(builtinModules);
  const js = files(join(shipped, 'build')).filter((f) => f.endsWith('.js'));
  assert.ok(js.includes('raven.js'), js.join(' '));
  const bad: string[] = [];
  for (const f of js) {
    const code = readFileSync(join(shipped, 'build', f), 'utf8');
    const specs = [
      ...code.matchAll(/^(?:import|export)\b[^;'"]*?\bfrom\s*["']([^"']+)["']/gm),
      ...code.matchAll(/^import\s*["']([^"']+)["']/gm),
      ...code.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g),
    ];
    for (const m of specs) {
      const spec = m[1]!;
      const own = spec.startsWith('./') && spec.endsWith('.js');
      if (!own && !spec.startsWith('node:') && !builtins.has(spec)) bad.push(`${f}: ${spec}`);
    }
  }
  assert.equal(bad, []);
  assert.not.match(readFileSync(join(shipped, 'build', 'raven.js'), 'utf8'), /devDependencies|"scripts"/, 'package.json is inlined whole');
  assert.match(readFileSync(join(shipped, 'build', 'THIRD-PARTY-LICENSES.txt'), 'utf8'), /^@kubernetes\/client-node@\S+ \(Apache-2\.0\)$/m);
});

test('in a checkout whose src/ is newer than the build and that has no tsx, bin/raven.mjs says to build and exits 1', () => {
  const checkout = join(tmp, 'checkout');
  cpSync(shipped, checkout, { recursive: true });
  mkdirSync(join(checkout, 'src'));
  const source = join(checkout, 'src', 'raven.ts');
  writeFileSync(source, 'throw new Error("the sources ran");\n');
  const past = new Date(Date.now() - 3_600_000);
  utimesSync(join(checkout, 'build', 'raven.js'), past, past);
  const stale = node([join(checkout, 'bin', 'raven.mjs'), '--version'], checkout);
  assert.is(stale.status, 1, stale.stderr);
  assert.is(stale.stdout, '');
  assert.match(stale.stderr, /^raven: .*build\/raven\.js is missing or older than the sources.*: run npm run build\n$/);

  const older = new Date(Date.now() - 7_200_000);
  for (const p of [source, join(checkout, 'src')]) utimesSync(p, older, older);
  assert.equal(node([join(checkout, 'bin', 'raven.mjs'), '--version'], checkout), { status: 0, stdout: `${VERSION}\n`, stderr: '' }, 'an up-to-date build runs');
});

test('raven started from the sources starts its own processes through bin/raven.mjs', () => {
  assert.equal(ravenCommand(), [process.execPath, join(ROOT, 'bin', 'raven.mjs')]);
});

test.run();
