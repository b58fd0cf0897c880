/**
 * Attacks on the L7 proxy, on loopback (issue 10, part 3), one test each: what an attacker tries,
 * and what a user notices when it is blocked. The proxy server runs in-process (hub + fronts, real
 * TLS) and, where the process itself is at stake, as `raven proxy --config` in a child process.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, createServer, type IncomingHttpHeaders, request, type Server } from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { connect, createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { proxyConfigFor } from '../../src/agent/proxy-role.ts';
import type { Dropped } from '../../src/platform/canonical.ts';
import type { Gateway } from '../../src/contract/gateway.ts';
import { makeProxyCerts } from '../../src/compiler/proxy-certs.ts';
import { parseProxyConfig } from '../../src/contract/proxy-config.ts';
import { ProxyFront } from '../../src/proxy/front.ts';
import { type HubLimits, TunnelClient, TunnelHub } from '../../src/proxy/reverse-tunnel.ts';
import { ravenCommand } from '../../src/platform/raven-command.ts';
import { waitFor } from '../support/cluster-harness.ts';

const haveOpenssl = spawnSync('openssl', ['version']).status === 0;
const TOKEN = 'Bearer s3cret-token-of-the-apiserver';

interface Kubelet {
  readonly port: number;
  /** Authorization headers this node received. */
  readonly seen: string[];
  readonly server: Server;
}

/** A node's "kubelet": answers `node <name>`, records Authorization; upgrades are accepted and then left idle. */
function kubelet(name: string, host: string, tls?: { cert: Buffer; key: Buffer }): Promise<Kubelet> {
  const seen: string[] = [];
  const handler = (req: { headers: IncomingHttpHeaders }, res: { end: (s: string) => void }): void => {
    seen.push(String(req.headers.authorization ?? ''));
    res.end(`node ${name}\n`);
  };
  const server = (tls ? createHttpsServer(tls, handler) : createServer(handler)) as Server;
  // An upgraded socket leaves the server's books (closeAllConnections misses it): unref'd, one the
  // proxy left half-open cannot keep the test process alive after the suite.
  server.on('upgrade', (_req, socket: Socket) => {
    socket.unref();
    socket.on('end', () => socket.end());
    socket.on('error', () => socket.destroy());
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
  });
  return new Promise((resolve) => server.listen(0, host, () => resolve({ port: (server.address() as { port: number }).port, seen, server })));
}

interface Answer {
  readonly status: number;
  readonly text: string;
  readonly headers: IncomingHttpHeaders;
}

function get(port: number, host: string, path = '/', o: { agent?: Agent; headers?: Record<string, string>; address?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const r = request({ host: o.address ?? '127.0.0.1', port, path, headers: { host, ...o.headers }, ...(o.agent && { agent: o.agent }) }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text, headers: res.headers }));
    });
    r.on('error', reject);
    r.end();
  });
}

/** Writes a raw request and reads the status line of the answer ('' when the connection closed without one). */
function raw(port: number, text: string, address = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, address);
    let buf = '';
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n')) {
        s.destroy();
        resolve(buf.slice(0, buf.indexOf('\r\n')));
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(buf));
    s.write(text);
  });
}

/** Whether something listens on address:port. */
function listening(port: number, address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, address);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createNetServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** A TCP connection that never speaks; resolves when the server closes it. */
function idle(port: number): { socket: Socket; closed: Promise<void>; isClosed: () => boolean } {
  const socket = connect(port, '127.0.0.1');
  let done = false;
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  void closed.then(() => (done = true));
  return { socket, closed, isClosed: () => done };
}

if (!haveOpenssl) {
  console.warn('needs openssl: proxy attack tests not run');
} else {
  const dir = mkdtempSync(join(tmpdir(), 'raven-proxy-attacks-'));
  // One tunnel CA: per-region clients, a "shared" client (one Secret on every node), a client whose
  // CN only looks like a gateway, and node serving certificates; a second set of CAs as strangers.
  makeProxyCerts(dir, { serverNames: ['localhost'], serverIPs: ['127.0.0.1'], gateways: ['gw-a', 'gw-b', 'shared-client', 'GW-B'], nodes: ['a-1', 'c-1'] });
  const other = join(dir, 'other');
  makeProxyCerts(other, { serverNames: [], serverIPs: [], gateways: [], nodes: ['a-1'] });
  const file = (f: string): Buffer => readFileSync(join(dir, f));
  const serverTls = { ca: file('ca.crt'), cert: file('server.crt'), key: file('server.key') };
  const clientTls = (name: string) => ({ ca: file('ca.crt'), cert: file(`client-${name}.crt`), key: file(`client-${name}.key`) });

  /** Hub + plain front + edges gw-a (a-1 at 127.0.0.2) and gw-b (b-1 at 127.0.0.3); c-1 (127.0.0.4) is the cloud's own node. */
  async function world(limits: Partial<HubLimits> = {}, o: { edges?: string[]; reason?: string } = {}) {
    const kubelets = { 'a-1': await kubelet('a-1', '127.0.0.2'), 'b-1': await kubelet('b-1', '127.0.0.3'), 'c-1': await kubelet('c-1', '127.0.0.4') };
    const ports = Object.values(kubelets).map((k) => k.port);
    const hubLog: string[] = [];
    const hub = new TunnelHub(serverTls, (m) => hubLog.push(m), limits);
    const tunnelPort = await hub.listen(0, '127.0.0.1');
    const directory = new Map([
      ['a-1', { gateway: 'gw-a', ip: '192.168.1.11' }],
      ['b-1', { gateway: 'gw-b', ip: '192.168.1.11' }],
      ['c-1', { gateway: 'gw-cloud', ip: '127.0.0.4' }],
    ]);
    const front = new ProxyFront({ gateway: 'gw-cloud', nodes: { node: (n) => directory.get(n) }, ports: { http: ports, https: [] }, hub, nodeCA: file('node-ca.crt') });
    const httpPort = await front.listenHttp(0, '127.0.0.1');
    const clients: TunnelClient[] = [];
    const edge = (announce: string, certOf: string, local: Record<string, string>): TunnelClient => {
      const c = new TunnelClient({ gateway: announce, server: { host: '127.0.0.1', port: tunnelPort, servername: 'localhost' }, tls: clientTls(certOf), resolve: (n) => (o.reason ? { refuse: o.reason } : local[n] ? { ip: local[n]! } : undefined), minBackoffMs: 50, maxBackoffMs: 200 });
      clients.push(c);
      c.start();
      return c;
    };
    for (const gw of o.edges ?? ['gw-a', 'gw-b']) edge(gw, gw, gw === 'gw-a' ? { 'a-1': '127.0.0.2' } : { 'b-1': '127.0.0.3' });
    await waitFor(() => hub.connected().length === (o.edges ?? ['gw-a', 'gw-b']).length, 5000, () => `edges connected: ${hub.connected()}\n${hubLog.join('\n')}`);
    const close = async (): Promise<void> => {
      for (const c of clients) c.stop();
      await front.close();
      await hub.close();
      for (const k of Object.values(kubelets)) {
        k.server.closeAllConnections();
        k.server.close();
      }
    };
    return { kubelets, hub, hubLog, tunnelPort, front, httpPort, edge, close };
  }

  test('malformed URLs and Host headers are answered 400 and the proxy process lives on (no crash before authentication)', async () => {
    const certDir = join(dir, 'server-only');
    mkdirSync(certDir, { recursive: true });
    for (const f of ['ca.crt', 'server.crt', 'server.key']) copyFileSync(join(dir, f), join(certDir, f));
    const [tunnel, http, https, metrics] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const config = {
      role: 'server',
      gateway: 'gw-cloud',
      certDir,
      metricsAddr: `127.0.0.1:${metrics}`,
      nodeIP: '127.0.0.2',
      nodes: { 'ok-1': { gateway: 'gw-a', ip: '192.0.2.10' }, Bad_Name: { gateway: 'gw-a', ip: '192.0.2.11' }, 'evil-1': { gateway: 'gw-a', ip: '192.0.2.12\r\nx-injected: 1' }, 'lo-1': { gateway: 'gw-a', ip: '127.0.0.1' } },
      ports: { http: [10255], https: [10250] },
      server: { tunnelAddr: `127.0.0.1:${tunnel}`, httpAddr: `:${http}`, httpsAddr: `:${https}` },
    };
    const configFile = join(dir, 'proxy.json');
    writeFileSync(configFile, JSON.stringify(config));
    const [node, bin] = ravenCommand();
    let log = '';
    const child: ChildProcess = spawn(node, [bin, 'proxy', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    child.stderr!.on('data', (d) => (log += d));
    try {
      await waitFor(() => log.includes('proxy server up'), 15_000, () => `the proxy up:\n${log}`);
      // `//x:99999/` is a path (it is forwarded: 503, gw-a has no client); the others are refused.
      const attacks: [string, string][] = [
        [`GET //x:99999/ HTTP/1.1\r\nHost: ok-1:10255\r\n\r\n`, '503 Service Unavailable'],
        [`GET //x:99999/ HTTP/1.1\r\nHost: ok-1:10255\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n`, '503 Service Unavailable'],
        [`GET / HTTP/1.1\r\nHost: ok-1:99999\r\n\r\n`, '400 Bad Request'],
        [`GET / HTTP/1.1\r\nHost: ok-1:0\r\n\r\n`, '400 Bad Request'],
        [`GET / HTTP/1.1\r\nHost: ok-1:99999\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n`, '400 Bad Request'],
        [`GET / HTTP/1.1\r\nHost: [zz\r\n\r\n`, '400 Bad Request'],
        [`GET /?nodeName=x%0d%0ax-injected:%201 HTTP/1.1\r\nHost: ok-1:10255\r\n\r\n`, '400 Bad Request'],
        [`GET http://ok-1:99999/ HTTP/1.1\r\nHost: ok-1:10255\r\n\r\n`, '400 Bad Request'],
        [`OPTIONS * HTTP/1.1\r\nHost: ok-1:10255\r\n\r\n`, '400 Bad Request'],
      ];
      for (const [a, status] of attacks) assert.is(await raw(http, a, '127.0.0.2'), `HTTP/1.1 ${status}`, JSON.stringify(a));
      assert.is(child.exitCode, null, 'the proxy process is still running');
      const after = await get(http, 'ok-1:10255', '/healthz', { address: '127.0.0.2' });
      assert.is(after.status, 503, 'and still answers: ok-1 is in gw-a, which has no proxy client');

      // The fronts: on the node's address and loopback only, never on all addresses.
      assert.ok(await listening(http, '127.0.0.1'), 'plain front on loopback');
      assert.not.ok(await listening(http, '127.0.0.3'), 'plain front not on every address');
      // The HTTPS front has no client CA in its cert dir: it does not start at all.
      assert.not.ok(await listening(https, '127.0.0.2'), 'no HTTPS front without client-ca.crt');
      assert.match(log, 'the HTTPS front is not started');

      // The bad node entries were dropped and counted; their neighbour serves.
      const m = await get(metrics, 'localhost', '/metrics');
      assert.match(m.text, 'raven_proxy_config_items_dropped_total{kind="node"} 1');
      assert.match(m.text, 'raven_proxy_config_items_dropped_total{kind="node-ip"} 2');
      assert.is((await get(http, 'lo-1:10255', '/', { address: '127.0.0.2' })).status, 404, 'a node whose address is loopback is not reachable');
    } finally {
      child.kill('SIGTERM');
    }
  });

  test('the HTTPS front requires a client certificate of its client CA', async () => {
    const w = await world();
    const httpsPort = await w.front.listenHttps(0, { cert: file('server.crt'), key: file('server.key'), clientCA: file('client-ca.crt') }, '127.0.0.1');
    const call = (tls: { cert?: Buffer; key?: Buffer }) =>
      new Promise<string>((resolve) => {
        const r = httpsRequest({ host: '127.0.0.1', port: httpsPort, path: '/', servername: 'localhost', ca: file('ca.crt'), headers: { host: `c-1:${w.kubelets['c-1'].port}`, authorization: TOKEN }, ...tls }, (res) => {
          res.resume();
          res.on('end', () => resolve(String(res.statusCode)));
        });
        r.on('error', (err) => resolve(`refused: ${err.message}`));
        r.end();
      });
    try {
      assert.match(await call({}), /^refused/, 'no client certificate');
      assert.match(await call({ cert: file('client-gw-a.crt'), key: file('client-gw-a.key') }), /^refused/, 'a certificate of another CA (the tunnel CA)');
      assert.is(await call({ cert: file('kubelet-client.crt'), key: file('kubelet-client.key') }), '403', "kube-apiserver's client certificate gets through to the port check");
      assert.equal(w.kubelets['c-1'].seen, [], 'no request reached the node');
    } finally {
      await w.close();
    }
  });

  test("a client certificate speaks only for its own gateway, and a live region's session is never taken over", async () => {
    const w = await world();
    try {
      const rogue = await kubelet('rogue', '127.0.0.9');
      const seen = rogue.seen;
      const local = { 'b-1': '127.0.0.9' };
      // The shared client certificate, one whose CN only looks like a gateway, gw-a's certificate, and a second copy of gw-b's.
      w.edge('gw-b', 'shared-client', local);
      w.edge('gw-b', 'GW-B', local);
      w.edge('gw-b', 'gw-a', local);
      w.edge('gw-b', 'gw-b', local);
      const reasons = ['(shared-client) is not for gw-b', '(GW-B) is not for gw-b', '(gw-a) is not for gw-b', 'gw-b already has a live session'];
      await waitFor(() => reasons.every((r) => w.hubLog.some((m) => m.includes('refused a client announcing "gw-b"') && m.includes(r))), 5000, () => w.hubLog.join('\n'));
      assert.equal(w.hub.connected(), ['gw-a', 'gw-b']);
      for (let i = 0; i < 20; i++) {
        const r = await get(w.httpPort, `b-1:${w.kubelets['b-1'].port}`, '/pods', { headers: { authorization: TOKEN } });
        assert.equal([r.status, r.text], [200, 'node b-1\n']);
      }
      assert.is(w.kubelets['b-1'].seen.length, 20, 'every request reached the real b-1');
      assert.equal(seen, [], 'the bearer token never reached another region');
      rogue.server.close();
    } finally {
      await w.close();
    }
  });

  test("HTTPS towards a node is verified against the node CA: a node with another CA's certificate gets no request and no token", async () => {
    const w = await world();
    const impostor = await kubelet('a-1', '127.0.0.2', { cert: readFileSync(join(other, 'node-a-1.crt')), key: readFileSync(join(other, 'node-a-1.key')) });
    const real = await kubelet('c-1', '127.0.0.4', { cert: file('node-c-1.crt'), key: file('node-c-1.key') });
    const front = new ProxyFront({ gateway: 'gw-cloud', nodes: { node: (n) => (n === 'a-1' ? { gateway: 'gw-a', ip: '192.168.1.11' } : n === 'c-1' ? { gateway: 'gw-cloud', ip: '127.0.0.4' } : undefined) }, ports: { http: [], https: [impostor.port, real.port] }, hub: w.hub, nodeCA: file('node-ca.crt') });
    const port = await front.listenHttps(0, { cert: file('server.crt'), key: file('server.key'), clientCA: file('client-ca.crt') }, '127.0.0.1');
    const call = (host: string) =>
      new Promise<Answer>((resolve, reject) => {
        const r = httpsRequest({ host: '127.0.0.1', port, path: '/pods', servername: 'localhost', ca: file('ca.crt'), cert: file('kubelet-client.crt'), key: file('kubelet-client.key'), headers: { host, authorization: TOKEN } }, (res) => {
          let text = '';
          res.on('data', (d) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text, headers: res.headers }));
        });
        r.on('error', reject);
        r.end();
      });
    try {
      const bad = await call(`a-1:${impostor.port}`);
      assert.is(bad.status, 502, bad.text);
      assert.match(bad.text, 'TLS to a-1');
      assert.equal(impostor.seen, [], 'the token never reached a node the CA does not vouch for');
      const good = await call(`c-1:${real.port}`);
      assert.equal([good.status, good.text], [200, 'node c-1\n'], 'a node with a certificate of the node CA is served');
    } finally {
      await front.close();
      for (const k of [impostor, real]) {
        k.server.closeAllConnections();
        k.server.close();
      }
      await w.close();
    }
  });

  test('keep-alive requests leave no connection open to the node, through the tunnel or direct', async () => {
    const w = await world();
    try {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      for (const n of ['b-1', 'c-1'] as const) {
        for (let i = 0; i < 30; i++) assert.is((await get(w.httpPort, `${n}:${w.kubelets[n].port}`, '/', { agent })).status, 200);
      }
      const counts = { 'b-1': -1, 'c-1': -1 };
      const open = async (n: 'b-1' | 'c-1'): Promise<number> => (counts[n] = await new Promise<number>((resolve) => w.kubelets[n].server.getConnections((_e, c) => resolve(c))));
      await waitFor(async () => (await open('b-1')) === 0 && (await open('c-1')) === 0, 5000, () => `no open connections to the nodes (b-1: ${counts['b-1']}, c-1: ${counts['c-1']})`);
      agent.destroy();
    } finally {
      await w.close();
    }
  });

  test('the public tunnel port: idle and silent connections are closed, excess ones refused, legitimate clients still connect', async () => {
    const w = await world({ handshakeTimeoutMs: 3000, helloTimeoutMs: 300, maxPending: 5, maxConnections: 50 }, { edges: ['gw-a'] });
    try {
      // Unauthenticated connections up to the cap stay (for now); the next one is closed at once.
      const flood = Array.from({ length: 5 }, () => idle(w.tunnelPort));
      await waitFor(() => w.hub.counts().pending === 5, 2000, () => `pending ${JSON.stringify(w.hub.counts())}`);
      const excess = idle(w.tunnelPort);
      await waitFor(() => excess.isClosed(), 2000, 'the connection over the cap closed');
      assert.ok(flood.every((f) => !f.isClosed()), 'the excess was refused, not a timeout');
      // The live session is untouched and serves during the flood.
      assert.is((await get(w.httpPort, `a-1:${w.kubelets['a-1'].port}`)).text, 'node a-1\n');
      // The TLS handshake timeout closes them all.
      await Promise.race([Promise.all(flood.map((f) => f.closed)), new Promise((_, reject) => setTimeout(() => reject(new Error('idle connections still open after 10 s')), 10_000))]);
      // A client that finishes TLS (a valid certificate) but never says hello is closed too.
      const silent = tlsConnect({ host: '127.0.0.1', port: w.tunnelPort, servername: 'localhost', ...clientTls('gw-b'), ALPNProtocols: ['raven-tunnel'] });
      silent.on('error', () => undefined);
      const silentClosed = new Promise<void>((resolve) => silent.once('close', () => resolve()));
      await Promise.race([silentClosed, new Promise((_, reject) => setTimeout(() => reject(new Error('a silent client still open after 5 s')), 5000))]);
      assert.not.ok(w.hub.connected().includes('gw-b'));
      // And a legitimate client connects once the flood is gone.
      w.edge('gw-b', 'gw-b', { 'b-1': '127.0.0.3' });
      await waitFor(() => w.hub.connected().includes('gw-b'), 5000, 'gw-b connected');
      assert.is((await get(w.httpPort, `b-1:${w.kubelets['b-1'].port}`)).text, 'node b-1\n');
    } finally {
      await w.close();
    }
    // The total cap counts authenticated connections too.
    const small = new TunnelHub(serverTls, () => undefined, { maxPending: 10, maxConnections: 3, handshakeTimeoutMs: 5000 });
    const port = await small.listen(0, '127.0.0.1');
    try {
      const held = Array.from({ length: 3 }, () => idle(port));
      await waitFor(() => small.counts().open === 3, 2000, 'three open');
      const over = idle(port);
      await waitFor(() => over.isClosed(), 2000, 'the fourth connection closed');
      assert.ok(held.every((h) => !h.isClosed()));
      for (const h of held) h.socket.destroy();
    } finally {
      await small.close();
    }
  });

  test('an idle stream (an upgraded exec/port-forward left silent) is closed after the per-stream idle timeout', async () => {
    const w = await world({ streamIdleMs: 300 });
    try {
      const s = connect(w.httpPort, '127.0.0.1');
      s.on('error', () => undefined);
      let head = '';
      s.on('data', (d) => (head += d));
      const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
      s.write(`GET /exec/ns/pod/c HTTP/1.1\r\nHost: a-1:${w.kubelets['a-1'].port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n`);
      await waitFor(() => head.includes('101 Switching Protocols'), 5000, 'the upgrade');
      await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('the idle stream is still open after 10 s')), 10_000))]);
      assert.is((await get(w.httpPort, `a-1:${w.kubelets['a-1'].port}`)).text, 'node a-1\n', 'the session itself still serves');
    } finally {
      await w.close();
    }
  });

  test('hostile Gateway status and config: bad items are dropped one by one, neighbours kept, nothing unparsed reaches a socket or a header', async () => {
    const on = { 'enable-l7-proxy': 'true' };
    const gateways: Gateway[] = [
      {
        metadata: { name: 'gw-cloud' },
        spec: { exposeType: 'PublicIP', proxyConfig: { Replicas: 1, proxyHTTPPort: '10255,99999,1e3', proxyHTTPSPort: '10250' } },
        status: { activeEndpoints: [{ nodeName: 'cloud-1', type: 'proxy', port: 10262, publicIP: '203.0.113.10', config: on }], nodes: [{ nodeName: 'cloud-1', privateIP: '10.0.0.10', subnets: [] }] },
      },
      {
        metadata: { name: 'gw-a' },
        spec: {},
        status: {
          activeEndpoints: [{ nodeName: 'a-1', type: 'proxy', config: on }],
          nodes: [
            { nodeName: 'a-1', privateIP: '192.168.1.11', subnets: [] },
            { nodeName: 'a-2', privateIP: '192.168.1.12\nnetns exec x sh -c id', subnets: [] },
            { nodeName: 'a-3', privateIP: '127.0.0.1', subnets: [] },
            { nodeName: 'a-4', privateIP: '192.168.1.014', subnets: [] },
            { nodeName: 'A_5', privateIP: '192.168.1.15', subnets: [] },
            { nodeName: 'a-6', privateIP: '192.168.1.16', subnets: [] },
          ],
        },
      },
      { metadata: { name: 'gw-x' }, spec: { exposeType: 'PublicIP' }, status: { activeEndpoints: [{ nodeName: 'x-1', type: 'proxy', publicIP: 'evil\r\nhost', config: on }], nodes: [] } },
    ];
    const dropped: Dropped[] = [];
    const addrs = { certDir: '/etc/raven/proxy', tunnelAddr: ':10262', httpAddr: ':10264', httpsAddr: ':10263', metricsAddr: ':10266' };
    const c = proxyConfigFor(gateways, 'a-1', addrs, (d) => dropped.push(d))!;
    assert.equal(Object.keys(c.nodes).sort(), ['a-1', 'a-6', 'cloud-1']);
    assert.equal(c.client, { servers: [{ host: '203.0.113.10', port: 10262 }] });
    assert.equal(c.ports.http, [10255]);
    assert.equal(dropped.map((d) => d.kind).sort(), ['node', 'node-ip', 'node-ip', 'node-ip', 'port', 'port', 'server']);
    const server = proxyConfigFor(gateways, 'cloud-1', addrs)!;
    assert.equal(server.nodeIP, '10.0.0.10', 'the fronts of the server bind to its own address');
    // The proxy parses the file again at its boundary: a hand-written hostile file gives the same.
    const parsed = parseProxyConfig({ ...c, nodes: { ...c.nodes, 'b-1': { gateway: 'gw-b', ip: '0:0:0:0:0:ffff:7f00:1' }, 'b-2': { gateway: 'gw-b', ip: '2001:DB8::0:1' } }, client: { servers: [{ host: '203.0.113.10', port: 10262 }, { host: '1.2.3.4', port: 1.5 }] } });
    assert.equal([...parsed.nodes.keys()], ['a-1', 'a-6', 'b-2', 'cloud-1']);
    assert.is(parsed.nodes.get('b-2')!.ip, '2001:db8::1', 'canonical text');
    assert.equal(parsed.dropped.map((d) => d.kind), ['node-ip', 'server']);

    // A reason with CR/LF from the edge reaches the client escaped, in the body and in x-raven-reason, never as a header of its own.
    const w = await world({}, { edges: ['gw-a'], reason: 'no\r\nx-injected: yes' });
    try {
      const r = await get(w.httpPort, `a-1:${w.kubelets['a-1'].port}`);
      assert.is(r.status, 403);
      assert.is(r.headers['x-injected'], undefined);
      assert.match(String(r.headers['x-raven-reason']), 'no??x-injected: yes');
    } finally {
      await w.close();
    }
  });

  test('the throwaway CAs issue per-region client certificates (CN gw-<region>), the HTTPS front client CA and kubelet-client, and the node CA', () => {
    const cert = (f: string): X509Certificate => new X509Certificate(file(f));
    for (const gw of ['gw-a', 'gw-b']) {
      assert.is(cert(`client-${gw}.crt`).subject, `CN=${gw}`);
      assert.match(String(cert(`client-${gw}.crt`).subjectAltName), `DNS:${gw}`);
      assert.ok(cert(`client-${gw}.crt`).verify(cert('ca.crt').publicKey), 'signed by the tunnel CA');
    }
    assert.ok(cert('kubelet-client.crt').verify(cert('client-ca.crt').publicKey), 'kubelet-client signed by the client CA');
    assert.not.ok(cert('kubelet-client.crt').verify(cert('ca.crt').publicKey), 'and not by the tunnel CA');
    assert.ok(cert('node-a-1.crt').verify(cert('node-ca.crt').publicKey), 'node certificates signed by the node CA');
  });

  test.after(() => rmSync(dir, { recursive: true, force: true }));
}

test.run();
