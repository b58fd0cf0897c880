/**
 * The L7 proxy on loopback, real sockets and real TLS: a cloud proxy server (front + tunnel hub)
 * and two edge proxy clients dialling out to it over mutual TLS, each serving nodes of its own
 * region. The server's directory gives both edge nodes the *same* address, so only routing by node
 * name can reach the right one. (The lab test puts the same addresses on real namespaces.)
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { Agent, request, type Server } from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeProxyCerts } from '../../src/compiler/proxy-certs.ts';
// @ts-expect-error: a plain JavaScript fixture (it also runs as a script in lab namespaces)
import { fakeKubelet } from '../fixtures/lab/fake-kubelet.mjs';
import { ProxyFront, resolveTarget } from '../../src/proxy/front.ts';
import { TunnelClient, TunnelHub } from '../../src/proxy/reverse-tunnel.ts';
import { waitFor } from '../support/cluster-harness.ts';

const haveOpenssl = spawnSync('openssl', ['version']).status === 0;

/** A node's "kubelet", listening on `host:port`. */
function kubelet(node: string, host: string, port: number): Promise<Server> {
  const s = fakeKubelet(node, { lines: 5, intervalMs: 60 }) as Server;
  return new Promise((resolve) => s.listen(port, host, () => resolve(s)));
}

const directory = new Map([
  ['c-1', { gateway: 'gw-cloud', ip: '127.0.0.4' }],
  ['a-1', { gateway: 'gw-a', ip: '192.168.1.11' }],
  ['b-1', { gateway: 'gw-b', ip: '192.168.1.11' }],
]);

test('target resolution: by Host, by nodeName (stripped), refusals with the reason', () => {
  const o = { nodes: { node: (n: string) => directory.get(n) }, ports: { http: [10255, 9445], https: [10250] } };
  assert.equal(resolveTarget('a-1:10255', '/metrics', 'http', o), { node: 'a-1', port: 10255, path: '/metrics' });
  assert.equal(resolveTarget('10.96.0.9:10250', '/containerLogs/ns/p/c?follow=true&nodeName=b-1', 'https', o), { node: 'b-1', port: 10250, path: '/containerLogs/ns/p/c?follow=true' });
  assert.equal((resolveTarget('192.168.1.11:10255', '/', 'http', o) as { status: number }).status, 400, 'an IP cannot name a node');
  assert.match((resolveTarget('nope:10255', '/', 'http', o) as { message: string }).message, 'nope is not a node of this cluster');
  assert.match((resolveTarget('a-1:22', '/', 'http', o) as { message: string }).message, 'port 22 is not open to the http proxy; allowed: 10255, 9445');
  assert.is((resolveTarget('a-1:10250', '/', 'http', o) as { status: number }).status, 403, 'an HTTPS port on the HTTP listener');
  assert.is((resolveTarget(undefined, '/', 'http', o) as { status: number }).status, 400);
});

if (!haveOpenssl) {
  console.warn('needs openssl: proxy tunnel tests not run');
} else {
  test('through the reverse tunnel: by name across colliding addresses, streams, upgrades, refusals, reconnection, mutual TLS', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'raven-proxy-'));
    const servers: Server[] = [];
    const clients: TunnelClient[] = [];
    let hub: TunnelHub | undefined;
    let front: ProxyFront | undefined;
    try {
      makeProxyCerts(dir, { serverNames: ['localhost'], serverIPs: ['127.0.0.1'], gateways: ['gw-a', 'gw-b'], nodes: ['a-1'] });
      const file = (f: string) => readFileSync(join(dir, f));
      const serverTls = { ca: file('ca.crt'), cert: file('server.crt'), key: file('server.key') };
      const clientTls = (gw: string) => ({ ca: file('ca.crt'), cert: file(`client-${gw}.crt`), key: file(`client-${gw}.key`) });
      // Three kubelets on one port: the cloud's own node, and one per edge (each edge sees its node locally).
      const first = await kubelet('a-1', '127.0.0.2', 0);
      const port = (first.address() as { port: number }).port;
      servers.push(first, await kubelet('b-1', '127.0.0.3', port), await kubelet('c-1', '127.0.0.4', port));

      const hubLog: string[] = [];
      hub = new TunnelHub(serverTls, (m) => hubLog.push(m));
      const tunnelPort = await hub.listen(0, '127.0.0.1');
      // An HTTPS "kubelet" (10250-style) on a-1, its certificate from the node CA: the proxy re-originates TLS to it and verifies it.
      const secure = createHttpsServer({ cert: file('node-a-1.crt'), key: file('node-a-1.key') }, (req, res) => res.end(`secure ${req.headers.host}\n`));
      await new Promise<void>((r) => secure.listen(0, '127.0.0.2', () => r()));
      servers.push(secure as unknown as Server);
      const securePort = (secure.address() as { port: number }).port;
      front = new ProxyFront({ gateway: 'gw-cloud', nodes: { node: (n) => directory.get(n) }, ports: { http: [port], https: [securePort] }, hub, nodeCA: file('node-ca.crt') });
      const httpPort = await front.listenHttp(0, '127.0.0.1');
      const httpsPort = await front.listenHttps(0, { cert: file('server.crt'), key: file('server.key'), clientCA: file('client-ca.crt') }, '127.0.0.1');
      const edgeOf = (gw: string, local: Record<string, string>) =>
        new TunnelClient({ gateway: gw, server: { host: '127.0.0.1', port: tunnelPort, servername: 'localhost' }, tls: clientTls(gw), resolve: (n, p) => (local[n] ? (p === port || p === securePort ? { ip: local[n]! } : { refuse: `port ${p} is not allowed` }) : undefined), minBackoffMs: 50, maxBackoffMs: 200 });
      clients.push(edgeOf('gw-a', { 'a-1': '127.0.0.2' }), edgeOf('gw-b', { 'b-1': '127.0.0.3' }));
      for (const c of clients) c.start();
      const h = hub;
      await waitFor(() => h.connected().length === 2, 5000, 'both edges connected');
      assert.equal(h.connected(), ['gw-a', 'gw-b']);

      // (fetch cannot set Host: node's http client can, as kube-apiserver and Prometheus do.)
      const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
      const get = (host: string, path: string, onChunk?: (chunk: string) => void, agent?: Agent) =>
        new Promise<{ status: number; text: string }>((resolve, reject) => {
          const r = request({ host: '127.0.0.1', port: httpPort, path, headers: { host }, ...(agent && { agent }) }, (res) => {
            let text = '';
            res.on('data', (d) => {
              text += d;
              onChunk?.(String(d));
            });
            res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          });
          r.on('error', reject);
          r.end();
        });
      // By name: the two edge nodes share 192.168.1.11 in the directory; each answer is its own node's.
      for (const n of ['a-1', 'b-1', 'c-1']) {
        const r = await get(`${n}:${port}`, '/metrics');
        assert.is(r.status, 200, r.text);
        assert.match(r.text, `node_name{node="${n}"} 1`);
        assert.match(r.text, `host=${n}:${port}`);
      }
      // HTTPS in (our server certificate, a client certificate of the client CA), TLS re-originated to the node through the tunnel.
      const viaTls = await new Promise<string>((resolve, reject) => {
        const r = httpsRequest({ host: '127.0.0.1', port: httpsPort, path: '/pods', servername: 'localhost', ca: file('ca.crt'), cert: file('kubelet-client.crt'), key: file('kubelet-client.key'), headers: { host: `a-1:${securePort}` } }, (res) => {
          let t = '';
          res.on('data', (d) => (t += d));
          res.on('end', () => resolve(`${res.statusCode} ${t}`));
        });
        r.on('error', reject);
        r.end();
      });
      assert.match(viaTls, `200 secure a-1:${securePort}`);
      const q = await get(`x-raven-proxy-internal-svc:${port}`, '/metrics?nodeName=b-1&x=1');
      assert.match(q.text, 'node_name{node="b-1"}');
      assert.match(q.text, 'path=/metrics?x=1', 'nodeName is stripped before forwarding');

      // A long-lived stream arrives as it is written, not at the end.
      const t0 = Date.now();
      let firstAt = 0;
      const streamed = await get(`a-1:${port}`, '/stream', () => (firstAt ||= Date.now() - t0));
      const endAt = Date.now() - t0;
      assert.match(streamed.text, 'a-1 line 0');
      assert.match(streamed.text, 'a-1 line 4');
      assert.ok(endAt - firstAt >= 150, `streamed: first line after ${firstAt} ms, end after ${endAt} ms`);

      // An upgrade (WebSocket handshake), then bytes both ways through the tunnel.
      const echoed = await new Promise<string>((resolve, reject) => {
        const s = connect(httpPort, '127.0.0.1');
        let buf = '';
        s.on('data', (d) => {
          buf += d;
          if (buf.includes('\r\n\r\n') && !buf.includes('b-1:')) s.write('ping-through-tunnel');
          if (buf.includes('b-1:ping-through-tunnel')) {
            s.destroy();
            resolve(buf);
          }
        });
        s.on('error', reject);
        s.write(`GET /exec/ns/pod/c HTTP/1.1\r\nHost: b-1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      });
      assert.match(echoed, 'HTTP/1.1 101 Switching Protocols');
      assert.match(echoed, 'Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');

      // Thousands of requests over one tunnel connection: every stream must close cleanly (streams
      // ended by resets trip nghttp2's rapid-reset guard after ~1,000 and kill the session).
      const connects = clients[1]!.connects;
      for (let i = 0; i < 1200; i++) {
        const r = await get(`b-1:${port}`, '/metrics', undefined, keepAlive);
        if (r.status !== 200) assert.unreachable(`request ${i}: ${r.status} ${r.text}`);
      }
      assert.is(clients[1]!.connects, connects, 'the same tunnel connection throughout');
      keepAlive.destroy();

      // Refusals are clear statuses, from the server or from the edge.
      assert.equal((await get(`nope:${port}`, '/')).status, 404);
      const denied = await get('a-1:22', '/');
      assert.equal(denied.status, 403);
      assert.match(denied.text, 'port 22 is not open');

      // A killed edge client: 503 naming the region, then it reconnects and serves again.
      clients[0]!.stop();
      await waitFor(() => !h.connected().includes('gw-a'), 5000, 'gw-a gone');
      const down = await get(`a-1:${port}`, '/metrics');
      assert.equal(down.status, 503);
      assert.match(down.text, 'no proxy client of gw-a is connected');
      clients[0]!.start();
      await waitFor(() => h.connected().includes('gw-a'), 5000, 'gw-a back');
      assert.match((await get(`a-1:${port}`, '/metrics')).text, 'node="a-1"');

      // Mutual TLS: a certificate from another CA is refused, and so is a client claiming another region.
      const stranger = join(dir, 'stranger');
      makeProxyCerts(stranger, { serverNames: [], serverIPs: [], gateways: ['gw-c'] });
      const strangerTls = { ca: file('ca.crt'), cert: readFileSync(join(stranger, 'client-gw-c.crt')), key: readFileSync(join(stranger, 'client-gw-c.key')) };
      const impostor = new TunnelClient({ gateway: 'gw-c', server: { host: '127.0.0.1', port: tunnelPort, servername: 'localhost' }, tls: strangerTls, resolve: () => undefined, minBackoffMs: 50 });
      const liar = new TunnelClient({ gateway: 'gw-b', server: { host: '127.0.0.1', port: tunnelPort, servername: 'localhost' }, tls: clientTls('gw-a'), resolve: () => undefined, minBackoffMs: 50 });
      clients.push(impostor, liar);
      impostor.start();
      liar.start();
      await waitFor(() => hubLog.some((m) => m.includes('refused a TLS client')) && hubLog.some((m) => m.includes('refused a client announcing "gw-b"')), 5000, () => `both refusals:\n${hubLog.join('\n')}`);
      assert.equal(h.connected(), ['gw-a', 'gw-b']);
      assert.match((await get(`b-1:${port}`, '/metrics')).text, 'node="b-1"', 'the real gw-b still serves b-1');
    } finally {
      for (const c of clients) c.stop();
      await front?.close();
      await hub?.close();
      for (const s of servers) {
        s.closeAllConnections();
        s.close();
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test.run();
