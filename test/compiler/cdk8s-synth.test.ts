/** `cdk8s synth`, the raw cdk8s route (`npm run synth` is `raven synth`, below), produces exactly the committed dist/. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { diffTrees, readTree } from '../support/support.ts';

test('cdk8s synth reproduces dist/ byte for byte, offline', () => {
  const out = join(mkdtempSync(join(tmpdir(), 'raven-cdk8s-')), 'dist');
  try {
    const r = spawnSync('node_modules/.bin/cdk8s', ['synth', '--no-check-upgrade', '--output', out], { encoding: 'utf8', env: { ...process.env, CDK8S_CHECK_UPGRADE: 'false' } });
    assert.is(r.status, 0, r.stderr + r.stdout);
    assert.is(diffTrees(readTree('dist'), readTree(out)), '');
  } finally {
    rmSync(join(out, '..'), { recursive: true, force: true });
  }
});

test('raven synth topologies/*.yaml --out DIR reproduces dist/ byte for byte', () => {
  const out = join(mkdtempSync(join(tmpdir(), 'raven-synth-')), 'dist');
  try {
    const files = ['topologies/retail-eu.yaml', './topologies/seed.yaml'];
    const r = spawnSync('node', ['bin/raven.mjs', 'synth', ...files, '--out', out], { encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    assert.is(diffTrees(readTree('dist'), readTree(out)), '');
  } finally {
    rmSync(join(out, '..'), { recursive: true, force: true });
  }
});

test.run();
