/** /healthz, /readyz and /metrics on one small HTTP server. */
import { createServer, type Server } from 'node:http';
import type { Registry } from './metrics.js';

export interface Endpoints {
  readonly healthy: () => boolean;
  readonly ready: () => boolean;
  readonly metrics: Registry;
}

/** `addr` is `host:port`, `:port` (all interfaces) or a bare port; port 0 picks a free one. */
export function parseAddr(addr: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(addr) ?? /^()(\d+)$/.exec(addr);
  if (!m) throw new Error(`invalid address "${addr}": write host:port, :port or port`);
  const port = Number(m[2]);
  if (port > 65535) throw new Error(`invalid address "${addr}": port must be 0-65535`);
  return { host: m[1] || '0.0.0.0', port };
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
