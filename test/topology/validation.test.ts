/**
 * The corpus of bad topologies: every file in test/fixtures/bad/ holds one (occasionally two) of the
 * mistakes people make, and declares the errors it must produce with comment lines
 *
 *   # expect: <line>:<col> <substring of the message>
 *
 * Each file must produce exactly those errors (same count, exact position, message containing the
 * substring), no topology, and messages that say how to fix the problem.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type Diagnostic, formatDiagnostic, loadTopology } from '../../src/topology/index.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BAD = join(ROOT, 'test', 'fixtures', 'bad');
const SEED = join(ROOT, 'topologies', 'seed.yaml');

interface Expectation {
  readonly line: number;
  readonly col: number;
  readonly text: string;
}

interface Fixture {
  readonly name: string;
  /** Relative to the repository root, as a user would pass it. */
  readonly path: string;
  readonly bytes: Uint8Array;
  readonly description: string;
  readonly expected: readonly Expectation[];
}

const EXPECT = /^#\s*expect:\s*(\d+):(\d+)\s+(.+?)\s*$/;

function readFixture(name: string): Fixture {
  const abs = join(BAD, name);
  const bytes = readFileSync(abs);
  const lines = bytes.toString('utf8').split('\n');
  const expected: Expectation[] = [];
  for (const l of lines) {
    const m = EXPECT.exec(l);
    if (m) expected.push({ line: Number(m[1]), col: Number(m[2]), text: m[3]! });
    else if (/^#\s*expect\b/.test(l)) throw new Error(`${name}: malformed expectation line: ${l}`);
  }
  const description = (lines[0] ?? '').replace(/^#\s*/, '');
  return { name, path: relative(ROOT, abs), bytes, description, expected };
}

const fixtures = readdirSync(BAD)
  .filter((f) => f.endsWith('.yaml'))
  .sort()
  .map(readFixture);

/**
 * A message names its fix: advice after a ";" (or a "did you mean"), the value that is required
 * ("must be ...", "needs at least ..."), or the `x-hint` of a pattern ("is not valid: <how>").
 */
function namesFix(message: string): boolean {
  return (
    /;\s*\S/.test(message) ||
    /did you mean/.test(message) ||
    /\bmust (be|not be) \S/.test(message) ||
    /\bneeds at least \d/.test(message) ||
    /\bis not valid: \S/.test(message) ||
    /\bat most \d+ characters/.test(message)
  );
}

/** Pairs each expectation with a distinct diagnostic at its position whose message contains its text. */
function unmatched(expected: readonly Expectation[], actual: readonly Diagnostic[]): { missing: Expectation[]; extra: Diagnostic[] } {
  const left = [...actual];
  const missing: Expectation[] = [];
  for (const e of expected) {
    const i = left.findIndex((d) => d.line === e.line && d.col === e.col && d.message.includes(e.text));
    if (i < 0) missing.push(e);
    else left.splice(i, 1);
  }
  return { missing, extra: left };
}

test('the corpus holds at least 30 bad topologies, each declaring the errors it must produce', () => {
  assert.ok(fixtures.length >= 30, `only ${fixtures.length} fixtures in ${BAD}`);
  for (const f of fixtures) {
    assert.ok(f.expected.length > 0, `${f.name} declares no "# expect:" line`);
    assert.ok(f.description.length > 0 && !f.description.startsWith('expect:'), `${f.name} does not start with a comment saying what is wrong`);
  }
});

test('the seed topology the fixtures start from is valid, so each error comes from the mistake added', () => {
  const r = loadTopology('topologies/seed.yaml', readFileSync(SEED));
  assert.equal(r.diagnostics.filter((d) => d.severity === 'error').map(formatDiagnostic), []);
  assert.ok(r.topology, 'seed.yaml produced no topology');
});

test('the fix-advice check accepts a message with advice and rejects one without', () => {
  assert.ok(namesFix('duplicate region name "a"; give every region its own name'));
  assert.ok(namesFix('unknown field "exposre" in spec; did you mean "exposure"?'));
  assert.not.ok(namesFix('spec.vpn is invalid'));
  assert.not.ok(namesFix('YAML syntax error: bad indentation'));
});

test('the matcher fails on a wrong position, a wrong text and an extra error', () => {
  const d: Diagnostic = { file: 'f', line: 3, col: 5, severity: 'error', path: '', message: 'boom; fix it' };
  assert.equal(unmatched([{ line: 3, col: 5, text: 'boom' }], [d]), { missing: [], extra: [] });
  assert.equal(unmatched([{ line: 3, col: 6, text: 'boom' }], [d]).missing.length, 1);
  assert.equal(unmatched([{ line: 3, col: 5, text: 'bang' }], [d]).missing.length, 1);
  assert.equal(unmatched([], [d]).extra.length, 1);
  // Two expectations cannot both be satisfied by one diagnostic.
  assert.equal(unmatched([{ line: 3, col: 5, text: 'boom' }, { line: 3, col: 5, text: 'boom' }], [d]).missing.length, 1);
});

for (const f of fixtures) {
  test(`${f.name} is rejected with exactly its declared errors (${f.description})`, () => {
    const t0 = performance.now();
    const r = loadTopology(f.path, f.bytes);
    const elapsed = performance.now() - t0;
    const errors = r.diagnostics.filter((d) => d.severity === 'error');
    const shown = errors.map(formatDiagnostic).join('\n  ');

    assert.is(r.topology, undefined, `${f.name} produced a topology`);
    const { missing, extra } = unmatched(f.expected, errors);
    assert.ok(
      missing.length === 0 && extra.length === 0,
      `${f.name}:\n missing: ${JSON.stringify(missing)}\n unexpected: ${JSON.stringify(extra.map(formatDiagnostic))}\n got:\n  ${shown}`,
    );
    assert.is(errors.length, f.expected.length);
    for (const d of errors) {
      assert.is(d.file, f.path);
      assert.ok(namesFix(d.message), `message does not say how to fix it: ${formatDiagnostic(d)}`);
      assert.not.match(d.message, /\n/, 'message spans several lines');
      assert.not.match(d.message, /undefined|\[object Object\]|NaN/, `message has a placeholder: ${d.message}`);
    }
    assert.ok(elapsed < 2000, `took ${elapsed.toFixed(0)} ms`);
  });
}

test.run();
