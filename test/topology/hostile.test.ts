/**
 * Hostile and broken input: each must become a clear one-line diagnostic with file:line:col, never
 * an exception or a stack trace, in bounded time. The time bounds are generous safety limits (a
 * regression to exponential or quadratic behaviour blows far past them), not benchmarks.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readSources } from '../../src/compiler/files.js';
import { type Diagnostic, formatDiagnostic, loadTopology, type Topology } from '../../src/topology/index.js';
import { check } from '../../src/topology/check.js';
import { normalize, type RawTopology } from '../../src/topology/normalize.js';
import { MAX_FILE_BYTES, MAX_NESTING, parseSource } from '../../src/topology/source.js';

const SEED_TEXT = readFileSync(fileURLToPath(new URL('../../topologies/seed.yaml', import.meta.url)), 'utf8');
/**
 * Loose on purpose: CI shares 2 cores with the rest of the suite (real-kernel tests, child
 * processes), and a 30,000-item file already takes ~6 s there. Quadratic behaviour at that size
 * (10^9 steps) still blows past it; speed itself is measured by `npm run bench`.
 */
const BOUND_MS = 8000;

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

/** `seed.yaml` with `from` replaced by `to` (which must occur). */
function seedWith(from: string, to: string): string {
  assert.ok(SEED_TEXT.includes(from), `seed.yaml has no ${JSON.stringify(from)}`);
  return SEED_TEXT.replace(from, to);
}

interface Outcome {
  readonly topology?: Topology;
  readonly errors: readonly Diagnostic[];
  readonly lines: readonly string[];
  readonly ms: number;
}

/** Loads `bytes` as `file`, asserting the invariants every hostile input shares. */
function load(file: string, bytes: Uint8Array, boundMs = BOUND_MS): Outcome {
  const t0 = performance.now();
  let result: ReturnType<typeof loadTopology>;
  try {
    result = loadTopology(file, bytes);
  } catch (err) {
    assert.unreachable(`loadTopology threw: ${(err as Error).stack ?? String(err)}`);
    throw err;
  }
  const ms = performance.now() - t0;
  const errors = result.diagnostics.filter((d) => d.severity === 'error');
  const lines = errors.map(formatDiagnostic);
  for (const l of lines) {
    assert.match(l, new RegExp(`^${escape(file)}:[1-9]\\d*:[1-9]\\d*: error: \\S`), `not file:line:col: ${l}`);
    assert.not.match(l, /\n|\r/, `message spans several lines: ${l}`);
    assert.not.match(l, /\bat .+:\d+:\d+\)?$|node:internal|\.ts:\d+/, `looks like a stack trace: ${l}`);
    assert.ok(l.length < 400, `message is not short: ${l}`);
  }
  assert.ok(ms < boundMs, `${file} took ${ms.toFixed(0)} ms (bound ${boundMs} ms)`);
  return { ...(result.topology && { topology: result.topology }), errors, lines, ms };
}

/** Exactly one error, at `line:col`, whose message matches `message`. */
function rejectsOnce(file: string, bytes: Uint8Array, line: number, col: number, message: RegExp): Outcome {
  const o = load(file, bytes);
  assert.is(o.topology, undefined, 'a topology was returned');
  assert.is(o.errors.length, 1, `expected one error, got:\n${o.lines.join('\n')}`);
  assert.is(`${o.errors[0]!.line}:${o.errors[0]!.col}`, `${line}:${col}`, o.lines[0]);
  assert.match(o.errors[0]!.message, message);
  return o;
}

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Deterministic pseudo-random bytes (xorshift), so a failure reproduces. */
function garbage(n: number, seed = 0x2545f491): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

test('the unmodified seed loads, so every rejection below comes from the damage done to it', () => {
  const o = load('seed.yaml', utf8(SEED_TEXT));
  assert.equal(o.lines, []);
  assert.ok(o.topology);
});

test('a YAML syntax error is reported at its line and column', () => {
  // Line 22 is hangzhou's `underNAT: true`; col 17 is the value that turned into a nested mapping.
  rejectsOnce('syntax.yaml', utf8(seedWith('      underNAT: true\n      endpoints: [{ node: hz-1 }', '      underNAT: true: false\n      endpoints: [{ node: hz-1 }')), 22, 17, /^YAML syntax error: \S/);
});

test('an unclosed flow list is a syntax error, not a crash', () => {
  const o = load('unclosed.yaml', utf8(seedWith('[10255, 9445]', '[10255, 9445')));
  assert.ok(o.errors.length >= 1);
  assert.is(o.errors[0]!.line, 19, o.lines.join('\n'));
  assert.match(o.errors[0]!.message, /^YAML syntax error: .*\]/);
});

test('a duplicate key is reported at the repeated key, in block and in flow mappings', () => {
  rejectsOnce('dup.yaml', utf8(seedWith('  l7Proxy: true\n', '  l7Proxy: true\n  l7Proxy: false\n')), 13, 3, /^duplicate key in a mapping; /);
  // Line 23 is hangzhou's endpoints; col 33 is the second `node`.
  rejectsOnce('dup-flow.yaml', utf8(seedWith('{ node: hz-1 }', '{ node: hz-1, node: hz-3 }')), 23, 33, /^duplicate key in a mapping; /);
});

test('duplicate keys are found in linear time in a mapping with 20,000 keys', () => {
  const keys = Array.from({ length: 20_000 }, (_, i) => `  k${i}: ${i}`);
  keys.push('  k7: again');
  const o = load('many-keys.yaml', utf8(`spec:\n${keys.join('\n')}\n`));
  assert.is(o.topology, undefined);
  assert.equal(o.lines, [`many-keys.yaml:20002:3: error: duplicate key in a mapping; each key may appear once, remove or merge the repeated one`]);
});

test('30,000 unknown fields are each reported and located in bounded time', () => {
  const keys = Array.from({ length: 30_000 }, (_, i) => `  k${i}: ${i}`);
  const o = load('unknown-keys.yaml', utf8(SEED_TEXT.replace('spec:\n', `spec:\n${keys.join('\n')}\n`)));
  assert.is(o.errors.length, 30_000);
  assert.match(o.lines[29_999]!, /^unknown-keys\.yaml:30007:3: error: unknown field "k29999" in spec; allowed: /);
});

test('tab indentation is reported at the line with the tab', () => {
  const o = load('tab.yaml', utf8(seedWith('    argocd: {}', '\targocd: {}')));
  assert.is(o.topology, undefined);
  assert.is(`${o.errors[0]!.line}:${o.errors[0]!.col}`, '10:1', o.lines.join('\n'));
  assert.match(o.errors[0]!.message, /^tab used for indentation; .*spaces/);
});

test('an alias bomb (billion laughs) is refused without expanding it', () => {
  const rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
  for (let i = 1; i < 10; i++) {
    const prev = String.fromCharCode(96 + i);
    const name = String.fromCharCode(97 + i);
    rows.push(`${name}: &${name} [${Array(9).fill(`*${prev}`).join(',')}]`);
  }
  const o = rejectsOnce('lol.yaml', utf8(rows.join('\n') + '\n'), 1, 1, /alias bomb/);
  assert.match(o.errors[0]!.message, /limit 100/);
});

test('a few aliases for reuse are still fine', () => {
  const text = seedWith('      nodes: [hz-1, hz-2]\n      underNAT: true', '      nodes: [hz-1, hz-2]\n      underNAT: &nat true').replace(
    '      nodes: [qd-1, qd-2]\n      underNAT: true',
    '      nodes: [qd-1, qd-2]\n      underNAT: *nat',
  );
  const o = load('aliases.yaml', utf8(text));
  assert.equal(o.lines, []);
  assert.ok(o.topology);
});

test('flow nesting 100,000 levels deep stops at the nesting limit', () => {
  rejectsOnce('flow.yaml', utf8('['.repeat(100_000)), 1, MAX_NESTING + 1, /^nesting deeper than 64 levels; /);
  rejectsOnce('flow-map.yaml', utf8('{a: '.repeat(100_000)), 1, 4 * MAX_NESTING + 1, /^nesting deeper than 64 levels; /);
});

test('block nesting, by indentation or by compact "- " and "? " indicators, stops at the nesting limit', () => {
  const indented = Array.from({ length: 2000 }, (_, i) => `${' '.repeat(i)}a:`).join('\n') + ' 1\n';
  rejectsOnce('indent.yaml', utf8(indented), 258, 257, /^nesting deeper than 64 levels; /);
  rejectsOnce('dashes.yaml', utf8('- '.repeat(100_000) + 'x\n'), 1, 257, /^nesting deeper than 64 levels; /);
  rejectsOnce('keys.yaml', utf8('? '.repeat(100_000) + 'x\n'), 1, 257, /^nesting deeper than 64 levels; /);
});

test('an apostrophe, a double quote or a "#" inside a plain scalar does not hide deep nesting from the limit', () => {
  // A quote or comment starts only at a token boundary; inside `it's` it is just a character.
  rejectsOnce('apostrophe.yaml', utf8(`a: it's\nb: ${'['.repeat(100_000)}`), 2, 4 + MAX_NESTING, /^nesting deeper than 64 levels; /);
  rejectsOnce('dquote.yaml', utf8(`a: say"hi\nb: ${'['.repeat(100_000)}`), 2, 4 + MAX_NESTING, /^nesting deeper than 64 levels; /);
  rejectsOnce('hash.yaml', utf8(`a: [x#, ${'['.repeat(100_000)}`), 1, 8 + MAX_NESTING, /^nesting deeper than 64 levels; /);
});

test('brackets and "#" inside quoted strings and comments do not count as nesting', () => {
  const deep = '['.repeat(200);
  const text = seedWith('  name: seed\n', `  name: seed # ${deep}\n`).replace('l7Proxy: true', `l7Proxy: true # '${deep}`);
  const o = load('quoted.yaml', utf8(text));
  assert.equal(o.lines, []);
  const o2 = load('quoted2.yaml', utf8(seedWith('  name: seed\n', `  name: "${deep}"\n`)));
  assert.match(o2.lines.join('\n'), /name ".*" is not valid/);
  assert.not.match(o2.lines.join('\n'), /nesting/);
});

test('binary garbage containing a NUL byte is refused as binary, at the NUL', () => {
  const bytes = garbage(64 * 1024);
  const nul = bytes.indexOf(0);
  assert.ok(nul >= 0, 'the garbage has no NUL byte');
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < nul; i++) if (bytes[i] === 0x0a) (line++, (lineStart = i + 1));
  rejectsOnce('garbage.bin', bytes, line, nul - lineStart + 1, /^file is binary \(contains a NUL byte\), not YAML text$/);
});

test('binary garbage without NUL bytes is refused as invalid UTF-8', () => {
  const bytes = garbage(64 * 1024, 7).map((b) => (b === 0 ? 0xff : b));
  rejectsOnce('garbage2.bin', bytes, 1, 1, /^file is not valid UTF-8 text; save it as UTF-8$/);
});

test('invalid UTF-8 (a Latin-1 "é") is refused with how to fix it', () => {
  const bytes = utf8(seedWith('name: seed', 'name: caf\u00e9'));
  const at = bytes.indexOf(0xc3);
  const latin1 = new Uint8Array([...bytes.subarray(0, at), 0xe9, ...bytes.subarray(at + 2)]);
  rejectsOnce('latin1.yaml', latin1, 1, 1, /not valid UTF-8.*; save it as UTF-8/);
});

test('an empty file is refused', () => {
  rejectsOnce('empty.yaml', new Uint8Array(0), 1, 1, /^file is empty; expected a Topology document/);
});

test('a file with only blanks and comments is refused', () => {
  rejectsOnce('blank.yaml', utf8('  \n\n\t\n  \r\n'), 1, 1, /^file has no content \(only blanks or comments\)/);
  rejectsOnce('comments.yaml', utf8('# just a comment\n\n   # another ### one\n#\n'), 1, 1, /^file has no content \(only blanks or comments\)/);
});

test('leading blank and comment lines are cheap to skip (no exponential backtracking)', () => {
  // Sized so that a whole-text regex that backtracks (3x per line) takes seconds here, not hours.
  const o = load('leading.yaml', utf8('\n'.repeat(13) + SEED_TEXT));
  assert.equal(o.lines, []);
  assert.ok(o.topology);
  rejectsOnce('leading-scalar.yaml', utf8('\n'.repeat(12) + 'x\n'), 13, 1, /^document must be a mapping \(got "x"\)/);
});

test('several YAML documents in one file are refused at the second document', () => {
  rejectsOnce('multi.yaml', utf8(`${SEED_TEXT}---\n${SEED_TEXT}`), 28, 1, /^file holds several YAML documents; put one Topology per file$/);
});

test('a file above the 8 MiB limit is refused without being parsed', () => {
  const bytes = new Uint8Array(MAX_FILE_BYTES + 1).fill(0x61);
  rejectsOnce('huge.yaml', bytes, 1, 1, /above the 8388608-byte limit.*; split it/);
});

test('a top-level scalar or list instead of a mapping is refused', () => {
  rejectsOnce('scalar.yaml', utf8('hello\n'), 1, 1, /^document must be a mapping \(got "hello"\)$/);
  rejectsOnce('list.yaml', utf8('- apiVersion: raven-gitops.io/v1alpha1\n- kind: Topology\n'), 1, 1, /^document must be a mapping \(got a list\)$/);
  rejectsOnce('null.yaml', utf8('~\n'), 1, 1, /^document must be a mapping \(got null\)$/);
});

/** Time of the semantic checks alone on a schema-valid `text`: where a quadratic check would show. */
function checkMs(text: string): number {
  const parsed = parseSource('scale.yaml', utf8(text));
  if (!parsed.ok) throw new Error(parsed.diagnostics.map(formatDiagnostic).join('\n'));
  const topology = normalize('scale.yaml', parsed.doc.data as RawTopology);
  const t0 = performance.now();
  check(topology);
  return performance.now() - t0;
}

test('30,000 regions with no relay are checked in bounded time, one finding each', () => {
  const regions = Array.from({ length: 30_000 }, (_, i) => `    - { name: r${i}, underNAT: true, endpoints: [{ node: n${i} }] }`);
  const text = SEED_TEXT.slice(0, SEED_TEXT.indexOf('  l7Proxy')) + `  regions:\n${regions.join('\n')}\n`;
  // 1.5 MB of YAML: parsing dominates the whole load; the checks get their own, tighter bound.
  const o = load('regions.yaml', utf8(text), 3 * BOUND_MS);
  assert.is(o.errors.length, 30_000);
  assert.match(o.lines[0]!, /^regions\.yaml:13:29: error: region "r0" is under NAT and no other region is reachable/);
  const ms = checkMs(text);
  assert.ok(ms < 4000, `checks took ${ms.toFixed(0)} ms`);
});

test('a region with 30,000 member nodes and endpoints is checked in bounded time', () => {
  const nodes = Array.from({ length: 30_000 }, (_, i) => `n${i}`);
  const text = seedWith('      nodes: [qd-1, qd-2]\n      underNAT: true\n      endpoints: [{ node: qd-1 }, { node: qd-2 }]', `      nodes: [${nodes.join(', ')}]\n      underNAT: true\n      endpoints: [${nodes.map((n) => `{ node: ${n} }`).join(', ')}, { node: stray }]`);
  const o = load('members.yaml', utf8(text), 3 * BOUND_MS);
  assert.equal(o.errors.map((d) => d.message.replace(/;.*/, '')), ['endpoint node "stray" is not a member of region "qingdao"']);
  const ms = checkMs(text);
  assert.ok(ms < 4000, `checks took ${ms.toFixed(0)} ms`);
});

/** readSources: what the CLI sees before any YAML. */
const dir = mkdtempSync(join(tmpdir(), 'raven-hostile-'));

function readOneError(path: string): Diagnostic {
  const t0 = performance.now();
  const r = readSources([path]);
  assert.ok(performance.now() - t0 < BOUND_MS);
  assert.is(r.sources.length, 0, `${path} was read`);
  assert.is(r.diagnostics.length, 1, JSON.stringify(r.diagnostics));
  const d = r.diagnostics[0]!;
  assert.match(formatDiagnostic(d), new RegExp(`^${escape(path)}:1:1: error: \\S[^\\n]*$`));
  return d;
}

test('a file that does not exist is reported, not thrown', () => {
  assert.match(readOneError(join(dir, 'missing.yaml')).message, /^cannot read file: no such file$/);
});

test('a directory without topology files is reported', () => {
  const empty = join(dir, 'empty-dir');
  mkdirSync(empty);
  writeFileSync(join(empty, 'notes.txt'), 'not a topology');
  assert.match(readOneError(empty).message, /^directory holds no \.yaml topology files$/);
});

test('a directory named like a topology file, inside a directory given, is reported as a directory', () => {
  const parent = join(dir, 'parent');
  mkdirSync(join(parent, 'sub.yaml'), { recursive: true });
  writeFileSync(join(parent, 'ok.yaml'), SEED_TEXT);
  const r = readSources([parent]);
  assert.equal(r.sources.map((s) => s.path), [join(parent, 'ok.yaml')]);
  assert.equal(r.diagnostics.map(formatDiagnostic), [`${join(parent, 'sub.yaml')}:1:1: error: cannot read file: is a directory`]);
});

test('an unreadable file is reported as permission denied (root, who can read anything, reads it)', () => {
  const locked = join(dir, 'locked.yaml');
  writeFileSync(locked, SEED_TEXT);
  chmodSync(locked, 0o000);
  try {
    if (process.getuid?.() === 0) {
      const r = readSources([locked]);
      assert.equal(r.diagnostics, []);
      assert.is(Buffer.from(r.sources[0]!.bytes).toString('utf8'), SEED_TEXT);
    } else {
      assert.match(readOneError(locked).message, /^cannot read file: permission denied$/);
    }
  } finally {
    chmodSync(locked, 0o644);
  }
});

test('a file on disk above the limit is read only up to the limit and refused', () => {
  const big = join(dir, 'big.yaml');
  writeFileSync(big, Buffer.alloc(MAX_FILE_BYTES + 1024 * 1024, 0x20));
  const r = readSources([big]);
  assert.equal(r.diagnostics, []);
  assert.is(r.sources[0]!.bytes.length, MAX_FILE_BYTES + 1);
  rejectsOnce(big, r.sources[0]!.bytes, 1, 1, /above the 8388608-byte limit/);
});

test('a FIFO is refused without being opened (opening it would block forever)', () => {
  const fifo = join(dir, 'pipe.yaml');
  const made = spawnSync('mkfifo', [fifo]);
  assert.is(made.status, 0, 'mkfifo is needed for this test');
  assert.match(readOneError(fifo).message, /^cannot read file: not a regular file/);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
