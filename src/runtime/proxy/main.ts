/**
 * `raven proxy --config FILE`: the L7 proxy on a proxy endpoint, as the agent starts it. The config
 * (JSON, written by the agent from Gateway status) says the role: `server` on an exposed (cloud)
 * region's proxy endpoint (tunnel hub on the external port, HTTP and HTTPS fronts on the internal
 * ports), `client` on an edge region's (dials every server, serves its region's nodes). SIGHUP
 * re-reads the nodes and ports; a role change is a restart, which the agent does.
 *
 * Certificates come from `certDir` (a mounted Secret): ca.crt, and server.crt/server.key or
 * client.crt/client.key. Nothing crosses regions in plaintext.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAddr, serveEndpoints } from '../http-endpoints.js';
import { Gauge, Registry } from '../metrics.js';
import { createLogger } from '../log.js';
import { runUntilSignal } from '../run-until-signal.js';
import { ProxyFront } from './front.js';
import { TunnelClient, TunnelHub } from './tunnel.js';

export interface ProxyConfig {
  readonly role: 'server' | 'client';
  readonly gateway: string;
  readonly certDir: string;
  /** /healthz, /readyz and /metrics (Prometheus). */
  readonly metricsAddr?: string;
  /** node name → its Gateway and address (as seen inside its own region). */
  readonly nodes: Readonly<Record<string, { readonly gateway: string; readonly ip: string }>>;
  readonly ports: { readonly http: readonly number[]; readonly https: readonly number[] };
  readonly server?: { readonly tunnelAddr: string; readonly httpAddr: string; readonly httpsAddr: string };
  readonly client?: { readonly servers: readonly { readonly host: string; readonly port: number }[] };
}

export function readProxyConfig(file: string): ProxyConfig {
  const c = JSON.parse(readFileSync(file, 'utf8')) as ProxyConfig;
  if (c.role !== 'server' && c.role !== 'client') throw new Error(`${file}: role must be server or client`);
  if (c.role === 'server' && !c.server) throw new Error(`${file}: a server needs server.{tunnelAddr,httpAddr,httpsAddr}`);
  if (c.role === 'client' && !c.client?.servers.length) throw new Error(`${file}: a client needs client.servers`);
  return c;
}

export async function runProxy(args: readonly string[]): Promise<number> {
  const i = args.indexOf('--config');
  if (i < 0 || !args[i + 1]) throw new Error('usage: raven proxy --config FILE');
  const file = args[i + 1]!;
  let config = readProxyConfig(file);
  const log = createLogger(`proxy/${config.gateway}`);
  const say = (msg: string): void => log.info(msg);
  const cert = (name: string): Buffer => readFileSync(join(config.certDir, name));
  const nodes = { node: (n: string) => config.nodes[n] };
  const registry = new Registry();
  const tunnels = registry.register(new Gauge('raven_proxy_tunnels_connected', 'Tunnel connections up: edge clients connected (server), servers reached (client).'));
  let ready = (): boolean => false;
  const meta = config.metricsAddr ? await serveEndpoints(config.metricsAddr, { healthy: () => true, ready: () => ready(), metrics: registry }) : undefined;
  process.on('SIGHUP', () => {
    try {
      config = readProxyConfig(file);
      log.info('configuration reloaded', { nodes: Object.keys(config.nodes).length });
    } catch (err) {
      log.error('configuration not reloaded', { error: (err as Error).message });
    }
  });
  if (config.role === 'server') {
    const tls = { ca: cert('ca.crt'), cert: cert('server.crt'), key: cert('server.key') };
    const hub = new TunnelHub(tls, say);
    const s = config.server!;
    const at = (addr: string) => parseAddr(addr);
    const tunnelPort = await hub.listen(at(s.tunnelAddr).port, at(s.tunnelAddr).host);
    const front = new ProxyFront({ gateway: config.gateway, nodes, ports: { get http() { return config.ports.http; }, get https() { return config.ports.https; } }, hub, registry });
    const gauge = setInterval(() => tunnels.set(hub.connected().length), 1000);
    ready = () => true;
    const httpPort = await front.listenHttp(at(s.httpAddr).port, at(s.httpAddr).host);
    const httpsPort = await front.listenHttps(at(s.httpsAddr).port, tls, at(s.httpsAddr).host);
    log.info('proxy server up', { tunnel: tunnelPort, http: httpPort, https: httpsPort });
    await runUntilSignal(async () => {
      clearInterval(gauge);
      meta?.server.close();
      await front.close();
      await hub.close();
    }, log);
    return 0;
  }
  const tls = { ca: cert('ca.crt'), cert: cert('client.crt'), key: cert('client.key') };
  const allowed = (): Set<number> => new Set([...config.ports.http, ...config.ports.https]);
  const clients = config.client!.servers.map(
    (server) =>
      new TunnelClient({
        gateway: config.gateway,
        server,
        tls,
        log: say,
        resolve: (node, port) => {
          const n = config.nodes[node];
          if (!n || n.gateway !== config.gateway) return undefined;
          return allowed().has(port) ? { ip: n.ip } : { refuse: `port ${port} is not a proxy port of this cluster` };
        },
      }),
  );
  for (const c of clients) c.start();
  const gauge = setInterval(() => tunnels.set(clients.filter((c) => c.connected).length), 1000);
  ready = () => clients.some((c) => c.connected);
  log.info('proxy client up', { servers: config.client!.servers.map((s) => `${s.host}:${s.port}`).join(',') });
  await runUntilSignal(async () => {
    clearInterval(gauge);
    meta?.server.close();
    for (const c of clients) c.stop();
  }, log);
  return 0;
}
