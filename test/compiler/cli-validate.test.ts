/**
 * The `raven` command as a user runs it: a separate process, exit codes, stderr, and what `synth`
 * leaves on disk when the input is bad.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SEED = 'topologies/seed.yaml';
const BAD = 'test/fixtures/bad/all-errors-at-once.yaml';
const BAD_ERRORS = readFileSync(join(ROOT, BAD), 'utf8').split('\n').filter((l) => l.startsWith('# expect:')).length;

interface Run {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function raven(...args: string[]): Run {
  const r = spawnSync(process.execPath, ['bin/raven.mjs', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function show(r: Run): string {
  return `exit ${r.status}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

/** No JavaScript stack frames or uncaught-error banners in what the user sees. */
function assertNoStackTrace(r: Run): void {
  for (const out of [r.stdout, r.stderr]) {
    assert.not.match(out, /^\s+at .+[:(]/m, `stack trace in output:\n${show(r)}`);
    assert.not.match(out, /node:internal|Error \[ERR_|TypeError|RangeError|ReferenceError|\.ts:\d+:\d+/, `internal error in output:\n${show(r)}`);
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'raven-cli-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

/** A fresh empty directory under tmp, whose contents the synth tests inspect. */
function workdir(name: string): string {
  const d = join(tmp, name);
  mkdirSync(d);
  return d;
}

test('raven --version prints package.json version alone and exits 0; the usage lists it', () => {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  const r = raven('--version');
  assert.equal(r, { status: 0, stdout: `${version}\n`, stderr: '' });
  assert.match(raven('--help').stdout, /^  raven --version /m);
});

test('validate exits 0 for the seed topology and says so on stdout', () => {
  const r = raven('validate', SEED);
  assert.is(r.status, 0, show(r));
  assert.is(r.stdout, `${SEED}: ok (cluster seed, 3 regions)\n`);
  assert.is(r.stderr, '');
});

test('validate exits 1 for a bad topology with one file:line:col error line per problem and no stack trace', () => {
  const r = raven('validate', BAD);
  assert.is(r.status, 1, show(r));
  assert.is(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  const diagnostics = lines.slice(0, -1);
  assert.is(diagnostics.length, BAD_ERRORS, show(r));
  for (const l of diagnostics) assert.match(l, new RegExp(`^${BAD.replace(/\./g, '\\.')}:\\d+:\\d+: error: \\S.*; `), l);
  assert.is(lines[lines.length - 1], `${BAD_ERRORS} errors`);
  // Sorted by position, so the output is stable.
  const positions = diagnostics.map((l) => l.split(':').slice(1, 3).map(Number) as [number, number]);
  const sorted = [...positions].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  assert.equal(positions, sorted);
  assertNoStackTrace(r);
});

test('validate reports every file given: a good one, a bad one and a missing one', () => {
  const r = raven('validate', SEED, BAD, 'no/such/topology.yaml');
  assert.is(r.status, 1, show(r));
  assert.match(r.stderr, /^no\/such\/topology\.yaml:1:1: error: cannot read file: no such file$/m);
  assert.match(r.stderr, new RegExp(`^${BAD.replace(/\./g, '\\.')}:36:13: error: duplicate region name "hangzhou"`, 'm'));
  assert.match(r.stderr, new RegExp(`^${BAD_ERRORS + 1} errors$`, 'm'));
  assert.not.match(r.stderr, /seed\.yaml/);
  assertNoStackTrace(r);
});

test('validate turns hostile input (deep nesting) into one error line, not a crash', () => {
  const deep = join(tmp, 'deep.yaml');
  writeFileSync(deep, '['.repeat(100_000));
  const r = raven('validate', deep);
  assert.is(r.status, 1, show(r));
  assert.is(r.stderr, `${deep}:1:65: error: nesting deeper than 64 levels; a topology never needs this\n1 error\n`);
  assertNoStackTrace(r);
});

test('raven with no arguments prints usage and exits 2', () => {
  const r = raven();
  assert.is(r.status, 2, show(r));
  assert.match(r.stdout + r.stderr, /usage:\n\s+raven validate FILE/);
  assertNoStackTrace(r);
});

test('validate without files is a usage error, exit 2', () => {
  const r = raven('validate');
  assert.is(r.status, 2, show(r));
  assert.match(r.stderr, /^raven: no topology files given\nusage:/);
  assertNoStackTrace(r);
});

test('an unknown command is a usage error, exit 2', () => {
  const r = raven('frobnicate', SEED);
  assert.is(r.status, 2, show(r));
  assert.match(r.stderr, /^raven: unknown command "frobnicate"\nusage:/);
  assert.is(r.stdout, '');
  assertNoStackTrace(r);
});

test('an unknown flag is a usage error, exit 2', () => {
  const r = raven('validate', '--strict', SEED);
  assert.is(r.status, 2, show(r));
  assert.match(r.stderr, /^raven: .*--strict.*\nusage:/);
  assert.is(r.stdout, '');
  assertNoStackTrace(r);
});

test('synth writes the bundle for a valid topology (so the refusals below are not a synth that never writes)', () => {
  const work = workdir('valid');
  const out = join(work, 'out');
  const r = raven('synth', SEED, '--out', out);
  assert.is(r.status, 0, show(r));
  assert.ok(readdirSync(join(out, 'seed')).length > 0);
  assert.equal(readdirSync(work), ['out'], 'temporary directories left next to the output');
  // A directory raven generated may be replaced.
  const again = raven('synth', SEED, '--out', out);
  assert.is(again.status, 0, show(again));
});

test('synth of a bad topology exits 1 and creates nothing', () => {
  const work = workdir('bad');
  const out = join(work, 'out');
  const r = raven('synth', BAD, '--out', out);
  assert.is(r.status, 1, show(r));
  assert.match(r.stderr, new RegExp(`^${BAD.replace(/\./g, '\\.')}:\\d+:\\d+: error: `, 'm'));
  assert.match(r.stderr, /nothing written to /);
  assert.not.ok(existsSync(out), 'the output directory was created');
  assert.equal(readdirSync(work), []);
  assertNoStackTrace(r);
});

test('synth of a valid and a bad topology together writes nothing, not even the valid one', () => {
  const work = workdir('mixed');
  const out = join(work, 'out');
  const r = raven('synth', SEED, BAD, '--out', out);
  assert.is(r.status, 1, show(r));
  assert.not.ok(existsSync(out), 'partial output was written');
  assert.equal(readdirSync(work), []);
  assertNoStackTrace(r);
});

test('synth refuses to replace a directory holding a file raven did not generate, and leaves it intact', () => {
  const work = workdir('foreign');
  const out = join(work, 'out');
  mkdirSync(join(out, 'docs'), { recursive: true });
  writeFileSync(join(out, 'docs', 'notes.md'), 'my notes\n');
  const r = raven('synth', SEED, '--out', out);
  assert.is(r.status, 1, show(r));
  assert.match(r.stderr, /refusing to replace .*notes\.md was not generated by raven-gitops/);
  assert.is(readFileSync(join(out, 'docs', 'notes.md'), 'utf8'), 'my notes\n');
  assert.equal(readdirSync(out), ['docs'], 'synth wrote into the directory it refused');
  assert.equal(readdirSync(work), ['out'], 'temporary directories left next to the output');
});

test('synth reports the refusal to replace a foreign directory as one line, without a stack trace', () => {
  const work = workdir('foreign-message');
  const out = join(work, 'out');
  mkdirSync(out);
  writeFileSync(join(out, 'README.md'), 'not generated\n');
  const r = raven('synth', SEED, '--out', out);
  assert.is(r.status, 1, show(r));
  assertNoStackTrace(r);
  assert.is(r.stderr, `raven: refusing to replace ${out}: ${join(out, 'README.md')} was not generated by raven-gitops; choose an empty or generated output directory\n`);
});

test.run();
