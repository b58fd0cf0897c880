/** `raven lab apiserver` as a user runs it: a separate process, kubeconfig, --crds, clean shutdown on signals. */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../support/apiserver-support.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let dir: string;

test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'raven-lab-'));
});
test.after(() => rmSync(dir, { recursive: true, force: true }));

interface Lab {
  out: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill: (s: NodeJS.Signals) => void;
}

function startLab(...args: string[]): Lab {
  const child = spawn(process.execPath, ['bin/raven.mjs', 'lab', 'apiserver', ...args], { cwd: ROOT });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { out: () => out, exited, kill: (s) => child.kill(s) };
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

test('lab apiserver --port --kubeconfig --crds serves the CRDs and stops cleanly on SIGTERM', async () => {
  const kubeconfig = join(dir, 'kubeconfig');
  const port = await freePort();
  const lab = startLab('--port', String(port), '--kubeconfig', kubeconfig, '--crds', 'dist/seed/crds');
  try {
    await waitFor('serving', () => lab.out().includes('serving'), 15_000);
    assert.match(lab.out(), `serving http://127.0.0.1:${port}; kubeconfig written to ${kubeconfig}; CRDs: gateways.raven.openyurt.io`);
    const kc = parse(readFileSync(kubeconfig, 'utf8'));
    assert.is(kc.clusters[0].cluster.server, `http://127.0.0.1:${port}`);
    assert.is(kc['current-context'], 'raven-lab');
    const res = await fetch(`http://127.0.0.1:${port}/apis/raven.openyurt.io/v1beta1`);
    assert.is(res.status, 200);
    assert.equal((await res.json()).resources.map((r: any) => r.name), ['gateways', 'gateways/status']);
    // An open watch must not keep the server from stopping.
    const watch = await fetch(`http://127.0.0.1:${port}/api/v1/namespaces?watch=1`);
    assert.is(watch.status, 200);
    lab.kill('SIGTERM');
    const { code } = await lab.exited;
    assert.is(code, 0, lab.out());
    assert.match(lab.out(), 'raven lab apiserver: stopped');
  } finally {
    lab.kill('SIGKILL');
  }
});

test('lab apiserver stops on SIGINT too, and a taken port is an error, not a hang', async () => {
  const a = startLab('--kubeconfig', join(dir, 'a'));
  try {
    await waitFor('serving', () => a.out().includes('serving'), 15_000);
    const port = /127\.0\.0\.1:(\d+)/.exec(a.out())![1]!;
    const b = startLab('--port', port, '--kubeconfig', join(dir, 'b'));
    const { code } = await b.exited;
    assert.is(code, 1);
    assert.match(b.out(), 'EADDRINUSE');
    assert.not.match(b.out(), /^\s+at /m, 'no stack trace');
    a.kill('SIGINT');
    assert.is((await a.exited).code, 0, a.out());
  } finally {
    a.kill('SIGKILL');
  }
});

test('lab usage errors exit 2', () => {
  for (const args of [['lab'], ['lab', 'nope'], ['lab', 'up'], ['lab', 'up', 'topologies/seed.yaml', '--wan-loss', '200'], ['lab', 'fail'], ['lab', 'check', '--bogus'], ['lab', 'apiserver'], ['lab', 'apiserver', '--kubeconfig', 'x', '--port', 'eighty'], ['lab', 'apiserver', '--kubeconfig', 'x', '--bogus']]) {
    const r = spawnSync(process.execPath, ['bin/raven.mjs', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
    assert.is(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, 'usage:');
  }
});

test.run();
