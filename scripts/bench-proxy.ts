/**
 * The L7 proxy on loopback, as JSON lines: requests/s and latency through the proxy (HTTP front →
 * reverse HTTP/2 tunnel over mutual TLS → edge client → node) versus straight to the node, and 100
 * concurrent long-lived streams through one tunnel. The proxy side (a "kubelet", the tunnel hub,
 * the front and one edge client) runs in a child process, so load generation does not share its
 * event loop; both share this machine's 2 cores. Needs openssl.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeProxyCerts } from '../src/compiler/proxy-certs.ts';
import { ProxyFront } from '../src/proxy/front.ts';
import { TunnelClient, TunnelHub } from '../src/proxy/reverse-tunnel.ts';

if (process.argv[2] === '--serve') {
  // Child: the node, and the proxy in front of it.
  const dir = process.argv[3]!;
  const kubelet = createServer((req, res) => {
    if (req.url?.startsWith('/stream')) {
      res.writeHead(200);
      let i = 0;
      const t = setInterval(() => {
        res.write(`line ${i++}\n`);
        if (i === 10) {
          clearInterval(t);
          res.end();
        }
      }, 100);
      return;
    }
    res.end('node_name{node="edge-1"} 1\n');
  });
  await new Promise<void>((r) => kubelet.listen(0, '127.0.0.2', () => r()));
  const port = (kubelet.address() as { port: number }).port;
  const file = (f: string) => readFileSync(join(dir, f));
  const hub = new TunnelHub({ ca: file('ca.crt'), cert: file('server.crt'), key: file('server.key') });
  const tunnelPort = await hub.listen(0, '127.0.0.1');
  const front = new ProxyFront({ gateway: 'gw-cloud', nodes: { node: (n) => (n === 'edge-1' ? { gateway: 'gw-edge', ip: '10.0.0.1' } : undefined) }, ports: { http: [port], https: [] }, hub });
  const httpPort = await front.listenHttp(0, '127.0.0.1');
  const client = new TunnelClient({ gateway: 'gw-edge', server: { host: '127.0.0.1', port: tunnelPort, servername: 'localhost' }, tls: { ca: file('ca.crt'), cert: file('client-gw-edge.crt'), key: file('client-gw-edge.key') }, resolve: (n) => (n === 'edge-1' ? { ip: '127.0.0.2' } : undefined) });
  client.start();
  while (!hub.connected().length) await new Promise((r) => setTimeout(r, 10));
  process.stdout.write(JSON.stringify({ port, httpPort }) + '\n');
} else {
  const dir = mkdtempSync(join(tmpdir(), 'raven-bench-proxy-'));
  makeProxyCerts(dir, { serverNames: ['localhost'], serverIPs: ['127.0.0.1'], gateways: ['gw-edge'] });
  const child = spawn(process.execPath, ['--import', 'tsx', process.argv[1]!, '--serve', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const { port, httpPort } = await new Promise<{ port: number; httpPort: number }>((resolve) => {
    let buf = '';
    child.stdout!.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) resolve(JSON.parse(buf.split('\n')[0]!));
    });
  });
  const out = (name: string, value: number, unit: string): void => console.log(JSON.stringify({ name, value: Math.round(value * 100) / 100, unit }));
  const targets = { direct: { host: '127.0.0.2', port, header: `edge-1:${port}` }, proxy: { host: '127.0.0.1', port: httpPort, header: `edge-1:${port}` } };
  const get = (agent: Agent, t: { host: string; port: number; header: string }, path = '/metrics'): Promise<void> =>
    new Promise((resolve, reject) => {
      const r = request({ host: t.host, port: t.port, path, agent, headers: { host: t.header } }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`status ${res.statusCode}: ${body.trim()}`))));
      });
      r.on('error', reject);
      r.end();
    });
  try {
    for (const [kind, t] of Object.entries(targets)) {
      // Latency: one request at a time over a kept-alive connection.
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      for (let i = 0; i < 200; i++) await get(agent, t);
      const lat: number[] = [];
      for (let i = 0; i < 1000; i++) {
        const t0 = process.hrtime.bigint();
        await get(agent, t);
        lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      lat.sort((a, b) => a - b);
      out(`proxy_bench_${kind}_latency_p50`, lat[500]!, 'ms');
      out(`proxy_bench_${kind}_latency_p99`, lat[990]!, 'ms');
      agent.destroy();
      // Throughput: 32 connections, 3 s.
      const many = new Agent({ keepAlive: true, maxSockets: 32 });
      let done = 0;
      const end = Date.now() + 3000;
      await Promise.all(Array.from({ length: 32 }, async () => {
        while (Date.now() < end) {
          await get(many, t);
          done++;
        }
      }));
      out(`proxy_bench_${kind}_requests_per_second`, done / 3, 'req/s');
      many.destroy();
    }
    // 100 concurrent streams (10 lines over 1 s each) through the one tunnel.
    const agent = new Agent({ keepAlive: false, maxSockets: 200 });
    const t0 = Date.now();
    let lines = 0;
    await Promise.all(Array.from({ length: 100 }, () => new Promise<void>((resolve, reject) => {
      const r = request({ host: '127.0.0.1', port: httpPort, path: '/stream', agent, headers: { host: `edge-1:${port}` } }, (res) => {
        res.on('data', (d) => (lines += String(d).split('\n').length - 1));
        res.on('end', () => resolve());
      });
      r.on('error', reject);
      r.end();
    })));
    out('proxy_bench_100_streams_wall', (Date.now() - t0) / 1000, 's');
    out('proxy_bench_100_streams_lines_received', lines, 'lines (of 1000)');
  } finally {
    child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}
