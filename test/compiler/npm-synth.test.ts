/**
 * The README's main command, `npm run synth`, run as written in a copy of the checkout: it rebuilds
 * dist/ from topologies/, and with an invalid topology it prints our diagnostics only, exits 1 and
 * leaves dist/ byte for byte as it was (cdk8s-cli, which it used to run, deleted dist/ first).
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { diffTrees, readTree } from '../support/support.ts';

/**
 * A directory holding the checkout's package.json, cdk8s.yaml, topologies/ and dist/ as copies
 * (the command may change them) and everything else it runs (code, node_modules) as symlinks.
 */
function checkoutCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'raven-npm-synth-'));
  for (const f of ['package.json', 'cdk8s.yaml', 'topologies', 'dist']) cpSync(f, join(dir, f), { recursive: true });
  for (const f of readdirSync('.')) {
    if (existsSync(join(dir, f)) || f.startsWith('.') || ['test', 'scripts', 'docs'].includes(f)) continue;
    symlinkSync(resolve(f), join(dir, f));
  }
  return dir;
}

function npm(dir: string, args: readonly string[]): { status: number | null; output: string } {
  const env = { ...process.env, CDK8S_CHECK_UPGRADE: 'false', NO_COLOR: '1' };
  const r = spawnSync('npm', [...args], { cwd: dir, encoding: 'utf8', env });
  return { status: r.status, output: r.stdout + r.stderr };
}

const STACK_FRAME = /^\s+at /m;

test('npm run synth rebuilds dist/ from topologies/ byte for byte', () => {
  const dir = checkoutCopy();
  try {
    rmSync(join(dir, 'dist'), { recursive: true });
    const r = npm(dir, ['run', '-s', 'synth']);
    assert.is(r.status, 0, r.output);
    assert.is(diffTrees(readTree('dist'), readTree(join(dir, 'dist'))), '');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('npm run synth with an invalid topology exits 1, prints only our diagnostics and leaves dist/ byte-identical', () => {
  const dir = checkoutCopy();
  try {
    const seed = join(dir, 'topologies', 'seed.yaml');
    const broken = readFileSync(seed, 'utf8').replaceAll('underNAT: true', 'underNat: true');
    assert.not.equal(broken, readFileSync(seed, 'utf8'), 'the seed topology no longer has underNAT: true to misspell');
    writeFileSync(seed, broken);
    const before = readTree(join(dir, 'dist'));
    const entriesBefore = readdirSync(dir).sort();

    // Exactly as the README says, then silent, where npm adds nothing of its own.
    for (const args of [['run', 'synth'], ['run', '-s', 'synth']]) {
      const r = npm(dir, args);
      assert.is(r.status, 1, `npm ${args.join(' ')}: ${r.output}`);
      assert.not.match(r.output, STACK_FRAME, `npm ${args.join(' ')} printed a stack trace:\n${r.output}`);
      assert.match(r.output, /^topologies\/seed\.yaml:\d+:\d+: error: unknown field "underNat" in spec\.regions\[1\]; did you mean "underNAT"\?/m);
      assert.is(diffTrees(before, readTree(join(dir, 'dist'))), '', `npm ${args.join(' ')} changed dist/`);
      assert.equal(readdirSync(dir).sort(), entriesBefore, `npm ${args.join(' ')} left files next to dist/`);
    }

    const silent = npm(dir, ['run', '-s', 'synth']);
    const lines = silent.output.trimEnd().split('\n');
    const ours = lines.filter((l) => /^topologies\/seed\.yaml:\d+:\d+: error: /.test(l) || /^\d+ errors?$/.test(l) || l === 'nothing written to dist');
    assert.equal(lines, ours, `npm run -s synth printed more than our diagnostics:\n${silent.output}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
