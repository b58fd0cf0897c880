/**
 * The cloud proxy server's front: cloud components (kube-apiserver → kubelet, Prometheus → node
 * exporters) send plain HTTP or HTTPS requests addressed to an edge node *by name*: `Host:
 * <node>:<port>`, or `?nodeName=<node>` (Raven's form, stripped before forwarding). The front checks
 * the node is a cluster node and the port one the topology allows for that scheme, then forwards:
 * to nodes of its own region directly, to others through the reverse tunnel of their region.
 * Responses stream as they come (`logs -f`); protocol upgrades (exec, attach, port-forward:
 * SPDY/WebSocket) become a raw byte pipe after the request is forwarded.
 */
import { createServer as httpServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as httpsServer } from 'node:https';
import { isIP, connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { Counter, type Registry } from '../metrics.js';
import { DialError, type TlsFiles, type TunnelHub } from './tunnel.js';

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
}

export type Target = { node: string; port: number; path: string } | { status: number; message: string };

/** Which node and port a request is for; pure. */
export function resolveTarget(host: string | undefined, url: string, scheme: 'http' | 'https', o: Pick<FrontOptions, 'nodes' | 'ports'>): Target {
  const u = new URL(url, 'http://placeholder');
  const byQuery = u.searchParams.get('nodeName');
  u.searchParams.delete('nodeName');
  const path = u.pathname + (u.searchParams.size ? `?${u.searchParams}` : '');
  const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(host ?? '');
  if (!m) return { status: 400, message: 'no Host header: address the node as Host: <node>:<port>' };
  const node = byQuery ?? m[1]!;
  const port = Number(m[2] ?? (scheme === 'https' ? 443 : 80));
  if (!byQuery && isIP(node.replace(/^\[|\]$/g, ''))) return { status: 400, message: `address nodes by name, not by IP (${node}): node IPs may repeat across regions` };
  if (!o.nodes.node(node)) return { status: 404, message: `${node} is not a node of this cluster` };
  const allowed = o.ports[scheme];
  if (!allowed.includes(port)) return { status: 403, message: `port ${port} is not open to the ${scheme} proxy; allowed: ${allowed.join(', ') || 'none'} (topology proxyPorts.${scheme})` };
  return { node, port, path };
}

export class ProxyFront {
  private readonly servers: Server[] = [];
  private readonly requests: Counter;

  constructor(private readonly o: FrontOptions) {
    this.requests = new Counter('raven_proxy_requests_total', 'Proxied requests by scheme and result.');
    o.registry?.register(this.requests);
  }

  /** Plain HTTP on `port` (the internal insecure port, 10264 in Raven). */
  async listenHttp(port: number, host = '0.0.0.0'): Promise<number> {
    return this.listen(httpServer(), 'http', port, host);
  }

  /** HTTPS with the server certificate on `port` (the internal secure port, 10263). */
  async listenHttps(port: number, tls: TlsFiles, host = '0.0.0.0'): Promise<number> {
    return this.listen(httpsServer({ cert: tls.cert, key: tls.key }), 'https', port, host);
  }

  private async listen(server: Server, scheme: 'http' | 'https', port: number, host: string): Promise<number> {
    server.on('request', (req, res) => void this.forward(scheme, req, res));
    server.on('upgrade', (req, socket, head) => void this.upgrade(scheme, req, socket as Duplex, head));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.servers.push(server);
    return (server.address() as { port: number }).port;
  }

  private async dial(scheme: 'http' | 'https', node: string, port: number): Promise<Duplex> {
    const where = this.o.nodes.node(node)!;
    const raw: Duplex =
      where.gateway === this.o.gateway
        ? await new Promise((resolve, reject) => {
            const s = netConnect({ host: where.ip, port });
            s.once('connect', () => resolve(s));
            s.once('error', (err) => reject(new DialError(502, `${node}:${port}: ${err.message}`)));
          })
        : await this.o.hub.dial(where.gateway, node, port);
    if (scheme === 'http') return raw;
    // Kubelets serve TLS with certificates for their own names; the proxy re-originates TLS as
    // Raven does (the client authenticated to us; the hop to the node is inside the tunnel).
    return tlsConnect({ socket: raw, servername: node, rejectUnauthorized: false });
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
    const out = httpRequest({ method: req.method, path: t.path, headers: { ...req.headers, host: `${t.node}:${t.port}` }, createConnection: () => upstream as never });
    out.on('response', (r) => {
      this.requests.inc({ scheme, result: String(r.statusCode ?? 0) });
      res.writeHead(r.statusCode ?? 502, r.rawHeaders);
      res.flushHeaders();
      r.pipe(res);
    });
    out.on('error', (err) => (res.headersSent ? res.destroy() : this.refuse(res, scheme, 502, `${t.node}:${t.port}: ${err.message}`)));
    // A client that went away aborts the upstream; a finished response has already ended it.
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
      socket.end(`HTTP/1.1 ${status} ${status === 403 ? 'Forbidden' : status === 404 ? 'Not Found' : 'Bad Gateway'}\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${message}\n`);
    };
    if ('status' in t) return fail(t.status, t.message);
    let upstream: Duplex;
    try {
      upstream = await this.dial(scheme, t.node, t.port);
    } catch (err) {
      return fail(err instanceof DialError ? err.status : 502, (err as Error).message);
    }
    const lines = [`${req.method} ${t.path} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i]!;
      lines.push(`${k}: ${k.toLowerCase() === 'host' ? `${t.node}:${t.port}` : req.rawHeaders[i + 1]}`);
    }
    upstream.write(lines.join('\r\n') + '\r\n\r\n');
    if (head.length) upstream.write(head);
    this.requests.inc({ scheme, result: 'upgrade' });
    upstream.on('error', () => socket.destroy());
    upstream.pipe(socket);
    socket.pipe(upstream);
  }

  private refuse(res: ServerResponse, scheme: string, status: number, message: string): void {
    this.requests.inc({ scheme, result: String(status) });
    res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(`raven proxy: ${message}\n`);
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => { s.close(() => resolve()); s.closeAllConnections(); })));
  }
}
