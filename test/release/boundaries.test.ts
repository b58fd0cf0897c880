/**
 * The layout's rules (docs/0011-layout.md), on the import graph of src/ as the sources write it:
 * every static and dynamic relative import, resolved to its file. A rule broken names the importing
 * file and the import, so the fix is where the message points.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const SRC = fileURLToPath(new URL('../../src', import.meta.url));
const walk = (d: string): string[] => readdirSync(d).flatMap((e) => (statSync(join(d, e)).isDirectory() ? walk(join(d, e)) : [join(d, e)]));
const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|^import\s+)(['"])(\.{1,2}\/[^'"]+)\1/gm;

/** Area of a source file: its first folder under src/, or "root" for src/*.ts. */
const area = (file: string): string => {
  const parts = relative(SRC, file).split('/');
  return parts.length > 1 ? parts[0]! : 'root';
};

interface Edge {
  readonly from: string;
  readonly to: string;
}

function edges(): Edge[] {
  const out: Edge[] = [];
  for (const file of walk(SRC).filter((f) => f.endsWith('.ts'))) {
    for (const m of readFileSync(file, 'utf8').matchAll(IMPORT)) {
      const spec = m[2]!;
      const to = resolve(dirname(file), spec.endsWith('.js') ? `${spec.slice(0, -3)}.ts` : spec);
      if (relative(SRC, to).startsWith('..')) continue; // package.json: outside the layout
      out.push({ from: file, to });
    }
  }
  return out;
}

/** What each area may import besides itself. */
const ALLOWED: Readonly<Record<string, readonly string[]>> = {
  platform: [],
  topology: ['contract', 'platform'],
  contract: ['topology', 'platform'],
  compiler: ['topology', 'contract', 'platform'],
  controller: ['topology', 'contract', 'platform'],
  agent: ['topology', 'contract', 'platform'],
  proxy: ['topology', 'contract', 'platform'],
  testkit: ['platform', 'contract'],
  lab: ['topology', 'contract', 'platform', 'compiler', 'testkit', 'controller', 'agent', 'proxy'],
  root: ['topology', 'contract', 'platform', 'compiler', 'controller', 'agent', 'proxy', 'lab', 'testkit'],
};

test('every source file sits in an area of the layout', () => {
  const unknown = walk(SRC).filter((f) => f.endsWith('.ts') && !(area(f) in ALLOWED)).map((f) => relative(SRC, f));
  assert.equal(unknown, []);
});

test('each area imports only what the layout allows: no process code imports the testkit, the lab, the compiler or another process', () => {
  const broken = edges()
    .filter((e) => area(e.from) !== area(e.to) && !ALLOWED[area(e.from)]!.includes(area(e.to)))
    .map((e) => `src/${relative(SRC, e.from)} imports src/${relative(SRC, e.to)} (${area(e.from)}/ may import ${ALLOWED[area(e.from)]!.join(', ') || 'nothing else'})`);
  assert.equal(broken, []);
});

test('the rule can fail: the lab does import the testkit, and a controller file importing it would be named', () => {
  const all = edges();
  assert.ok(all.some((e) => area(e.from) === 'lab' && area(e.to) === 'testkit'));
  assert.not.ok(ALLOWED.controller!.includes('testkit'));
});

test.run();
