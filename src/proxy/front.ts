/**
 * The cloud proxy server's front: cloud components (kube-apiserver → kubelet, Prometheus → node
 * exporters) send plain HTTP or HTTPS requests addressed to an edge node *by name*: `Host:
 * <node>:<port>`, or `?nodeName=<node>` (Raven's form, stripped before forwarding). The front checks
 * the node is a cluster node and the port one the topology allows for that scheme, then forwards:
 * to nodes of its own region directly, to others through the reverse tunnel of their region.
 * Responses stream as they come (`logs -f`); protocol upgrades (exec, attach, port-forward:
 * SPDY/WebSocket) become a raw byte pipe after the request is forwarded.
 *
 * Hardening: `resolveTarget` is total (any Host or target gives a target or a 400), every handler
 * error is answered, the fronts never bind all addresses, the HTTPS front requires client
 * certificates, TLS towards nodes is verified against the cluster CA, and each upstream serves one
 * request and is closed when its response ends.
 */
import { createServer as httpServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as httpsServer } from 'node:https';
import { isIP, connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { canonicalPort, objectName } from '../platform/canonical.js';
import { Counter, type Registry } from '../platform/metrics.js';
import { DialError, headerText, type TunnelHub } from './reverse-tunnel.js';

export interface NodeDirectory {
  /** Where a cluster node is: its Gateway, and its address as seen from its own region. */
  node(name: string): { gateway: string; ip: string } | undefined;
}

export interface FrontOptions {
  /** This server's own Gateway: its nodes are dialled directly. */
  readonly gateway: string;
  readonly nodes: NodeDirectory;
  /** Ports cloud components may reach edge nodes on, per scheme (the topology's proxyPorts). */
  readonly ports: { readonly http: readonly number[]; readonly https: readonly number[] };
  readonly hub: TunnelHub;
  readonly registry?: Registry;
  /** CA that signs the nodes' serving certificates: HTTPS towards nodes is verified against it. Without it, HTTPS requests are answered 502. */
  readonly nodeCA?: string | Buffer;
  /** After a response has ended, how long the upstream may take to close before it is destroyed. @default 5_000 */
  readonly upstreamGraceMs?: number;
  readonly log?: (msg: string) => void;
}

/** The HTTPS front's TLS: its serving pair, and the CA its clients' certificates must chain to. */
export interface FrontTls {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
  /** kube-apiserver's kubelet-client (or front-proxy) CA: `client-ca.crt`. */
  readonly clientCA: string | Buffer;
}

export type Target = { node: string; port: number; path: string } | { status: number; message: string };

const bad = (message: string): Target => ({ status: 400, message });
const WILDCARD_HOSTS = new Set(['', '0.0.0.0', '::', '[::]']);
/** Hop-by-hop headers: they describe one connection, never forwarded (RFC 9110 §7.6.1). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);

/** Which node and port a request is for; pure, and total: any input gives a target or a refusal. */
export function resolveTarget(host: string | undefined, url: string, scheme: 'http' | 'https', o: Pick<FrontOptions, 'nodes' | 'ports'>): Target {
  if (typeof url !== 'string' || !url.startsWith('/')) return bad('the request target must be a path (origin form)');
  let u: URL;
  try {
    // Appended, not resolved against a base: `//x:99999/` is a path here, not an authority.
    u = new URL(`http://placeholder${url}`);
  } catch {
    return bad('the request target is not a valid path');
  }
  const byQuery = u.searchParams.get('nodeName');
  u.searchParams.delete('nodeName');
  const path = u.pathname + (u.searchParams.size ? `?${u.searchParams}` : '');
  const m = /^(\[[^\]]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(host ?? '');
  if (!m) return bad('no usable Host header: address the node as Host: <node>:<port>');
  const hostName = m[1]!;
  const port = canonicalPort(Number(m[2] ?? (scheme === 'https' ? 443 : 80)));
  if (!port.ok) return bad(`the Host port: ${port.reason}`);
  if (byQuery === null && isIP(hostName.replace(/^\[|\]$/g, ''))) return bad(`address nodes by name, not by IP (${hostName}): node IPs may repeat across regions`);
  const name = objectName(byQuery ?? hostName);
  if (!name.ok) return bad(name.reason);
  const node = name.value;
  if (!o.nodes.node(node)) return { status: 404, message: `${node} is not a node of this cluster` };
  const allowed = o.ports[scheme];
  if (!allowed.includes(port.value)) return { status: 403, message: `port ${port.value} is not open to the ${scheme} proxy; allowed: ${allowed.join(', ') || 'none'} (topology proxyPorts.${scheme})` };
  return { node, port: port.value, path };
}

/** Request headers for the node: end-to-end ones only, Host rewritten, one request per upstream. */
function upstreamHeaders(h: IncomingHttpHeaders, host: string): Record<string, string | string[]> {
  const named = new Set(String(h.connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP_BY_HOP.has(k) && !named.has(k)) out[k] = v;
  // The upstream (a tunnel stream, or a TCP connection) serves exactly this request: it is closed
  // when the response ends, never parked where nothing reuses it.
  return { ...out, host, connection: 'close' };
}

/** Response headers for the client, as raw pairs, without the upstream's hop-by-hop ones. */
function downstreamHeaders(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  return out;
}

const reasonPhrase = (status: number): string => ({ 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 503: 'Service Unavailable', 504: 'Gateway Timeout' })[status] ?? 'Bad Gateway';

export class ProxyFront {
  private readonly servers: Server[] = [];
  private readonly requests: Counter;

  constructor(private readonly o: FrontOptions) {
    this.requests = new Counter('raven_proxy_requests_total', 'Proxied requests by scheme and result.');
    o.registry?.register(this.requests);
  }

  /** Plain HTTP on `host:port` (the internal insecure port, 10264 in Raven); never on all addresses. */
  async listenHttp(port: number, host = '127.0.0.1'): Promise<number> {
    return this.listen(httpServer(), 'http', port, host);
  }

  /** HTTPS on `host:port` (the internal secure port, 10263): clients must present a certificate of `tls.clientCA`. */
  async listenHttps(port: number, tls: FrontTls, host = '127.0.0.1'): Promise<number> {
    const server = httpsServer({ cert: tls.cert, key: tls.key, ca: tls.clientCA, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' });
    server.on('tlsClientError', (err, socket) => {
      socket.destroy();
      this.o.log?.(`front: refused an HTTPS client: ${headerText(err.message)}`);
    });
    return this.listen(server, 'https', port, host);
  }

  private async listen(server: Server, scheme: 'http' | 'https', port: number, host: string): Promise<number> {
    if (WILDCARD_HOSTS.has(host)) throw new Error(`failed to listen on ${JSON.stringify(host)}:${port}: a front binds to the node's address or loopback, never to all addresses`);
    server.on('request', (req, res) => {
      this.forward(scheme, req, res).catch((err: unknown) => this.failed(res, scheme, err));
    });
    server.on('upgrade', (req, socket, head) => {
      this.upgrade(scheme, req, socket as Duplex, head).catch((err: unknown) => {
        this.requests.inc({ scheme, result: 'error' });
        this.o.log?.(`front: upgrade failed: ${headerText((err as Error)?.message ?? String(err))}`);
        (socket as Duplex).destroy();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.servers.push(server);
    return (server.address() as { port: number }).port;
  }

  private async dial(scheme: 'http' | 'https', node: string, port: number): Promise<Duplex> {
    const where = this.o.nodes.node(node);
    if (!where) throw new DialError(404, `${node} is not a node of this cluster`);
    if (scheme === 'https' && !this.o.nodeCA) throw new DialError(502, 'no CA for the nodes\' serving certificates is configured (nodeCA)');
    const raw: Duplex =
      where.gateway === this.o.gateway
        ? await new Promise((resolve, reject) => {
            const s = netConnect({ host: where.ip, port });
            s.once('connect', () => resolve(s));
            s.once('error', (err) => reject(new DialError(502, `${node}:${port}: ${err.message}`)));
          })
        : await this.o.hub.dial(where.gateway, node, port);
    if (scheme === 'http') return raw;
    // Kubelets serve TLS with certificates for their own names, signed by the cluster CA: the
    // proxy re-originates TLS and verifies the node's certificate against that CA.
    return new Promise((resolve, reject) => {
      const s = tlsConnect({ socket: raw, ...(!isIP(node) && { servername: node }), ca: this.o.nodeCA, minVersion: 'TLSv1.2' });
      s.once('secureConnect', () => resolve(s));
      s.once('error', (err) => {
        raw.destroy();
        reject(new DialError(502, `TLS to ${node}:${port}: ${err.message}`));
      });
    });
  }

  private async forward(scheme: 'http' | 'https', req: IncomingMessage, res: ServerResponse): Promise<void> {
    const t = resolveTarget(req.headers.host, req.url ?? '/', scheme, this.o);
    if ('status' in t) return this.refuse(res, scheme, t.status, t.message);
    let upstream: Duplex;
    try {
      upstream = await this.dial(scheme, t.node, t.port);
    } catch (err) {
      return this.refuse(res, scheme, err instanceof DialError ? err.status : 502, (err as Error).message);
    }
    upstream.on('error', () => undefined);
    // A client that went away aborts the upstream; a finished response closes it, and an upstream
    // that does not close within the grace period is destroyed.
    let grace: NodeJS.Timeout | undefined;
    upstream.once('close', () => clearTimeout(grace));
    const finish = (): void => {
      upstream.end();
      grace ??= setTimeout(() => upstream.destroy(), this.o.upstreamGraceMs ?? 5_000);
      grace.unref();
    };
    const out = httpRequest({ method: req.method, path: t.path, headers: upstreamHeaders(req.headers, `${t.node}:${t.port}`), createConnection: () => upstream as never });
    out.on('response', (r) => {
      this.requests.inc({ scheme, result: String(r.statusCode ?? 0) });
      try {
        res.writeHead(r.statusCode ?? 502, downstreamHeaders(r.rawHeaders));
      } catch (err) {
        upstream.destroy();
        return this.refuse(res, scheme, 502, `${t.node}:${t.port} answered with an invalid head: ${(err as Error).message}`);
      }
      res.flushHeaders();
      r.on('end', finish);
      r.pipe(res);
    });
    out.on('error', (err) => {
      upstream.destroy();
      if (res.headersSent) res.destroy();
      else this.refuse(res, scheme, 502, `${t.node}:${t.port}: ${err.message}`);
    });
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(out);
  }

  private async upgrade(scheme: 'http' | 'https', req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => undefined);
    const t = resolveTarget(req.headers.host, req.url ?? '/', scheme, this.o);
    const fail = (status: number, message: string): void => {
      this.requests.inc({ scheme, result: String(status) });
      socket.end(`HTTP/1.1 ${status} ${reasonPhrase(status)}\r\ncontent-type: text/plain\r\nx-raven-reason: ${headerText(message)}\r\nconnection: close\r\n\r\n${message}\n`);
    };
    if ('status' in t) return fail(t.status, t.message);
    let upstream: Duplex;
    try {
      upstream = await this.dial(scheme, t.node, t.port);
    } catch (err) {
      return fail(err instanceof DialError ? err.status : 502, (err as Error).message);
    }
    if (socket.destroyed) return void upstream.destroy();
    const lines = [`${req.method} ${t.path} HTTP/1.1`];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i]!;
      lines.push(`${k}: ${k.toLowerCase() === 'host' ? `${t.node}:${t.port}` : req.rawHeaders[i + 1]}`);
    }
    upstream.write(lines.join('\r\n') + '\r\n\r\n');
    if (head.length) upstream.write(head);
    this.requests.inc({ scheme, result: 'upgrade' });
    upstream.on('error', () => socket.destroy());
    socket.once('close', () => upstream.destroy());
    upstream.once('close', () => socket.destroy());
    upstream.pipe(socket);
    socket.pipe(upstream);
  }

  /** A handler's unexpected error: an answer (500), never an unhandled rejection. */
  private failed(res: ServerResponse, scheme: string, err: unknown): void {
    this.o.log?.(`front: request failed: ${headerText((err as Error)?.message ?? String(err))}`);
    if (res.headersSent) res.destroy();
    else this.refuse(res, scheme, 500, 'internal error in the proxy');
  }

  private refuse(res: ServerResponse, scheme: string, status: number, message: string): void {
    this.requests.inc({ scheme, result: String(status) });
    if (res.headersSent || res.destroyed) return void res.destroy();
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'x-raven-reason': headerText(message) });
    res.end(`raven proxy: ${message}\n`);
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => { s.close(() => resolve()); s.closeAllConnections(); })));
  }
}
