/** /healthz, /readyz and /metrics on one small HTTP server. */
import { createServer, type Server } from 'node:http';
import ipaddr from 'ipaddr.js';
import { objectName, shown } from './canonical.js';
import type { Registry } from './metrics.js';

export interface Endpoints {
  readonly healthy: () => boolean;
  readonly ready: () => boolean;
  readonly metrics: Registry;
}

/** `host:port`, `[v6]:port`, `:port` or `port`, with a port 0-65535 (0 = any free port). */
export function parseListenAddr(text: unknown): { host: string; port: number } {
  if (typeof text !== 'string') throw new Error(`invalid address ${shown(text)}`);
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[^:[\]]*):)?(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port > 65535) throw new Error(`invalid address ${shown(text)}: write host:port, :port or port (0-65535)`);
  const host = (m[1] ?? '').replace(/^\[|\]$/g, '');
  if (host && host !== '*' && !ipaddr.isValid(host) && objectName(host).ok === false && host !== 'localhost') throw new Error(`invalid address ${shown(text)}: the host is neither an IP address nor a name`);
  return { host: host === '*' ? '' : host, port };
}

/** A listen address for `serveEndpoints`: as `parseListenAddr`, an empty host meaning all addresses. */
export function parseAddr(addr: string): { host: string; port: number } {
  const { host, port } = parseListenAddr(addr);
  return { host: host || '0.0.0.0', port };
}

export async function serveEndpoints(addr: string, e: Endpoints): Promise<{ server: Server; port: number }> {
  const { host, port } = parseAddr(addr);
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (status: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    if (path === '/healthz') return e.healthy() ? reply(200, 'ok\n') : reply(500, 'unhealthy\n');
    if (path === '/readyz') return e.ready() ? reply(200, 'ok\n') : reply(503, 'not ready\n');
    if (path === '/metrics') return reply(200, e.metrics.render(), 'text/plain; version=0.0.4; charset=utf-8');
    return reply(404, 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const bound = server.address();
  return { server, port: typeof bound === 'object' && bound ? bound.port : port };
}
