/**
 * L7 proxy mode in `raven lab`: the seed topology (l7Proxy on, proxy ports 10255/9445 over HTTP)
 * with `--same-edge-lan`, so hangzhou's and qingdao's nodes have the *same* IP addresses. A cloud
 * component on the cloud proxy endpoint reaches a specific edge node by name and gets that node's
 * answer; a streamed endpoint streams; a WebSocket upgrade passes; a killed edge proxy client is
 * restarted by its agent and serves again; unknown nodes and disallowed ports are refused clearly.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { labDown } from '../../src/lab/lab.ts';
import { LabState } from '../../src/lab/state.ts';
import { sleep } from '../support/apiserver-support.ts';
import { waitFor } from '../support/cluster-harness.ts';
import { canUseNetns, haveWireGuard, run } from '../support/netns.ts';

const ready = canUseNetns() && spawnSync('nft', ['--version']).status === 0 && haveWireGuard() && spawnSync('openssl', ['version']).status === 0 && spawnSync('curl', ['--version']).status === 0;
if (!ready) {
  console.warn('needs root, nftables, wireguard-go, openssl and curl: L7 proxy lab tests not run');
} else {
  test('cloud to edge by node name through the L7 proxy, across regions whose node IPs are the same', async () => {
    const runDir = mkdtempSync(join(tmpdir(), 'raven-lab-proxy-'));
    const name = `p${process.pid % 100000}`;
    const state = new LabState(runDir, name);
    const kubelets: ChildProcess[] = [];
    try {
      const up = await run(process.execPath, ['bin/raven.mjs', 'lab', 'up', 'topologies/seed.yaml', '--name', name, '--run-dir', runDir, '--same-edge-lan', '--wait', '120']);
      assert.is(up.code, 0, up.out);
      const plan = state.read().plan;
      const node = (n: string) => plan.nodes.find((x) => x.name === n)!;
      assert.is(node('hz-1').lanIP, node('qd-1').lanIP, 'the two edges reuse the same addresses');
      for (const n of ['hz-1', 'qd-1', 'hz-2', 'cloud-1']) {
        kubelets.push(spawn('ip', ['netns', 'exec', node(n).netns, process.execPath, 'test/fixtures/lab/fake-kubelet.mjs', n, '10255', '9445'], { stdio: 'ignore', env: { ...process.env, RAVEN_LAB_DIR: state.dir } }));
      }
      // A cloud component on the cloud proxy endpoint, talking to the proxy's internal HTTP port.
      const cloud = node('cloud-gw-1').netns;
      const curl = (host: string, path = '/metrics', extra: string[] = []) => run('ip', ['netns', 'exec', cloud, 'curl', '-s', '-m', '5', '-w', '\n%{http_code}', '-H', `Host: ${host}`, ...extra, `http://127.0.0.1:10264${path}`]);
      for (const n of ['hz-1', 'qd-1', 'hz-2', 'cloud-1']) {
        const r = await waitFor(async () => {
          const x = await curl(`${n}:10255`);
          return x.out.endsWith('\n200') ? x : undefined;
        }, 30_000, `${n} through the proxy`);
        assert.match(r.out, `node_name{node="${n}"} 1`, `${n} answers for itself`);
      }
      assert.match((await curl('x-raven-proxy-internal-svc:9445', '/metrics?nodeName=qd-1')).out, 'node_name{node="qd-1"}', "Raven's nodeName form");

      // A stream (logs -f): lines arrive as written, over about a second.
      const times: number[] = [];
      const t0 = Date.now();
      await new Promise<void>((resolve) => {
        const p = spawn('ip', ['netns', 'exec', cloud, 'curl', '-sN', '-H', 'Host: qd-1:10255', 'http://127.0.0.1:10264/stream'], { stdio: ['ignore', 'pipe', 'ignore'] });
        p.stdout.on('data', () => times.push(Date.now() - t0));
        p.on('close', () => resolve());
      });
      assert.ok(times.length >= 3 && times.at(-1)! - times[0]! >= 500, `chunks at ${times.join(', ')} ms`);

      // A WebSocket upgrade (what exec, attach and port-forward use), then bytes both ways.
      const ws = await run('ip', ['netns', 'exec', cloud, process.execPath, '-e', `
        const s = require('node:net').connect(10264, '127.0.0.1');
        let buf = '';
        s.on('data', (d) => { buf += d; if (buf.includes('\\r\\n\\r\\n') && !buf.includes('hz-1:')) s.write('hello'); if (buf.includes('hz-1:hello')) { process.stdout.write(buf); s.destroy(); } });
        s.write('GET /exec/ns/pod/c HTTP/1.1\\r\\nHost: hz-1:10255\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n');
        setTimeout(() => process.exit(1), 5000);`]);
      assert.match(ws.out, 'HTTP/1.1 101 Switching Protocols');
      assert.match(ws.out, 'hz-1:hello');

      // The proxy's own metrics, on proxy-metric-bind-addr (:10266).
      const metrics = await run('ip', ['netns', 'exec', cloud, 'curl', '-s', 'http://127.0.0.1:10266/metrics']);
      assert.match(metrics.out, 'raven_proxy_tunnels_connected 2');
      assert.match(metrics.out, /raven_proxy_requests_total\{result="200",scheme="http"\} \d+/);

      // Refusals name the reason.
      const unknown = await curl('nobody:10255');
      assert.ok(unknown.out.endsWith('\n404'), unknown.out);
      assert.match(unknown.out, 'nobody is not a node of this cluster');
      const port = await curl('qd-1:22');
      assert.ok(port.out.endsWith('\n403'), port.out);

      // Kill qingdao's proxy client: requests fail with 503 naming the region, then its agent
      // restarts it and they succeed again.
      const gwNode = plan.nodes.find((n) => n.region === 'qingdao' && existsSync(join(state.nodeDir(n.name), 'state', 'proxy.pid')))!;
      const pid = Number(readFileSync(join(state.nodeDir(gwNode.name), 'state', 'proxy.pid'), 'utf8'));
      assert.ok(state.owns(pid), 'the proxy process is the lab\'s');
      process.kill(pid, 'SIGKILL');
      const outage = await waitFor(async () => {
        const x = await curl('qd-1:10255');
        return x.out.endsWith('\n503') ? x : undefined;
      }, 10_000, 'a 503 while qingdao has no client').catch(() => undefined);
      if (outage) assert.match(outage.out, 'no proxy client of gw-qingdao is connected');
      const back = await waitFor(async () => {
        const x = await curl('qd-1:10255');
        return x.out.endsWith('\n200') ? x : undefined;
      }, 20_000, 'qingdao served again');
      assert.match(back.out, 'node_name{node="qd-1"}');
      assert.is.not(Number(readFileSync(join(state.nodeDir(gwNode.name), 'state', 'proxy.pid'), 'utf8')), pid, 'served by a new proxy process its agent started');
    } finally {
      for (const k of kubelets) k.kill('SIGTERM');
      await sleep(200);
      if (state.exists()) await labDown({ name, runDir }, { stdout: () => undefined, stderr: () => undefined });
      rmSync(runDir, { recursive: true, force: true });
    }
  });
}

test.run();
