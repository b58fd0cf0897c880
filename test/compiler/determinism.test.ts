/**
 * Output is byte-identical across runs and across input orderings that carry no meaning:
 * region order, mapping key order, the order files are given in. (Endpoint order is priority
 * and does carry meaning.)
 */
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMap, isSeq, parseDocument, type Node as YamlNode } from 'yaml';
import { compile } from '../../src/compiler/compile.ts';
import { diffTrees, topologyFiles } from '../support/support.ts';

/** Small deterministic PRNG (mulberry32), so a failure names a seed that reproduces it. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(items: T[], rnd: () => number): void {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
}

/** Shuffles every mapping's keys and the regions list, keeping comments and endpoint order. */
function shuffled(text: string, seed: number): string {
  const rnd = random(seed);
  const doc = parseDocument(text);
  const visit = (node: unknown, key?: string): void => {
    if (isMap(node)) {
      shuffle(node.items, rnd);
      for (const pair of node.items) visit(pair.value, String((pair.key as { value?: unknown }).value));
    } else if (isSeq(node)) {
      if (key === 'regions' || key === 'nodes' || key === 'podCIDRs' || key === 'serviceCIDRs' || key === 'http' || key === 'https') {
        shuffle(node.items as YamlNode[], rnd);
      }
      for (const item of node.items) visit(item);
    }
  };
  visit(doc.contents);
  return doc.toString();
}

const sources = topologyFiles().map((path) => ({ path, bytes: readFileSync(path) }));
const reference = compile(sources).files!;

test('compiling the same files twice gives byte-identical output', () => {
  assert.is(diffTrees(reference, compile(sources).files!), '');
});

test('the order files are given in does not change the output', () => {
  assert.is(diffTrees(reference, compile([...sources].reverse()).files!), '');
});

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  test(`shuffled regions, lists and mapping keys give the same output (seed ${seed})`, () => {
    const reordered = sources.map((s) => ({ path: s.path, bytes: Buffer.from(shuffled(s.bytes.toString(), seed)) }));
    assert.is.not(reordered[0]!.bytes.toString(), sources[0]!.bytes.toString(), 'the shuffle changed nothing');
    const result = compile(reordered);
    assert.ok(result.files, result.diagnostics.map((d) => d.message).join('\n'));
    assert.is(diffTrees(reference, result.files!), '');
  });
}

test.run();
