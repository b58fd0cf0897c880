/**
 * `raven proxy --config FILE`: the L7 proxy on a proxy endpoint, as the agent starts it. The config
 * (JSON, written by the agent from Gateway status, parsed strictly by `readProxyConfig`) says the
 * role: `server` on an exposed (cloud) region's proxy endpoint (tunnel hub on the external port, on
 * all addresses; HTTP and HTTPS fronts on the internal ports, on the node's address and loopback),
 * `client` on an edge region's (dials every server, serves its region's nodes). SIGHUP re-reads the
 * nodes and ports; a role change is a restart, which the agent does.
 *
 * Certificates come from `certDir` (a mounted Secret, `CERT_FILES`): ca.crt (tunnel CA), and
 * server.crt/server.key plus client-ca.crt (the HTTPS front's client CA) on servers, or
 * client.crt/client.key (CN gw-<region>) on clients. Without client-ca.crt the HTTPS front does not
 * start. Nothing crosses regions in plaintext.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { serveEndpoints } from '../platform/http-endpoints.js';
import { Counter, Gauge, Registry, registerProcessMetrics } from '../platform/metrics.js';
import { createLogger } from '../platform/log.js';
import { runUntilSignal } from '../platform/run-until-signal.js';
import { CERT_FILES, DROPPED_KINDS, nodeCAFile, type ProxySettings, readProxyConfig } from '../contract/proxy-config.js';
import { ProxyFront } from './front.js';
import { TunnelClient, TunnelHub } from './reverse-tunnel.js';

export type { ProxyConfig, ProxySettings } from '../contract/proxy-config.js';
export { readProxyConfig } from '../contract/proxy-config.js';

export async function runProxy(args: readonly string[]): Promise<number> {
  const i = args.indexOf('--config');
  if (i < 0 || !args[i + 1]) throw new Error('usage: raven proxy --config FILE');
  const file = args[i + 1]!;
  let config = readProxyConfig(file);
  const log = createLogger(`proxy/${config.gateway}`);
  const say = (msg: string): void => log.info(msg);
  const cert = (name: string): Buffer => readFileSync(join(config.certDir, name));
  const nodes = { node: (n: string) => config.nodes.get(n) };
  const registry = new Registry();
  registerProcessMetrics(registry);
  const tunnels = registry.register(new Gauge('raven_proxy_tunnels_connected', 'Tunnel connections up: edge clients connected (server), servers reached (client).'));
  const dropped = registry.register(new Counter('raven_proxy_config_items_dropped_total', 'Items of the proxy configuration refused (bad node name, address, port or server), by kind.'));
  for (const kind of DROPPED_KINDS) dropped.init({ kind });
  const countDropped = (c: ProxySettings): void => {
    for (const d of c.dropped) {
      dropped.inc({ kind: d.kind });
      log.warn('configuration item dropped', { source: d.source, kind: d.kind, reason: d.reason });
    }
  };
  countDropped(config);
  let ready = (): boolean => false;
  const meta = config.metricsAddr ? await serveEndpoints(config.metricsAddr, { healthy: () => true, ready: () => ready(), metrics: registry }) : undefined;
  process.on('SIGHUP', () => {
    try {
      const next = readProxyConfig(file);
      countDropped(next);
      config = next;
      log.info('configuration reloaded', { nodes: config.nodes.size });
    } catch (err) {
      log.error('configuration not reloaded', { error: (err as Error).message, cause: String((err as Error).cause ?? '') });
    }
  });
  if (config.role === 'server') {
    const s = config.server!;
    const tls = { ca: cert(CERT_FILES.tunnelCA), cert: cert(CERT_FILES.serverCert), key: cert(CERT_FILES.serverKey) };
    const hub = new TunnelHub(tls, say);
    const tunnelPort = await hub.listen(s.tunnel.port, s.tunnel.host || '0.0.0.0');
    const caFile = nodeCAFile(config, existsSync);
    const nodeCA = existsSync(caFile) ? readFileSync(caFile) : undefined;
    if (!nodeCA) log.warn('no CA for the nodes\' serving certificates: HTTPS requests will be answered 502', { nodeCA: caFile });
    const ports = { get http() { return config.ports.http; }, get https() { return config.ports.https; } };
    const front = new ProxyFront({ gateway: config.gateway, nodes, ports, hub, registry, log: say, ...(nodeCA && { nodeCA }) });
    const gauge = setInterval(() => tunnels.set(hub.connected().length), 1000);
    ready = () => true;
    const listening: string[] = [];
    for (const a of s.http) listening.push(`http ${a.host}:${await front.listenHttp(a.port, a.host)}`);
    const clientCA = join(config.certDir, CERT_FILES.frontClientCA);
    if (existsSync(clientCA)) {
      const frontTls = { cert: tls.cert, key: tls.key, clientCA: readFileSync(clientCA) };
      for (const a of s.https) listening.push(`https ${a.host}:${await front.listenHttps(a.port, frontTls, a.host)}`);
    } else {
      log.error(`the HTTPS front is not started: ${clientCA} is missing (the CA of its clients, e.g. kube-apiserver's kubelet-client CA); it never serves unauthenticated clients`);
    }
    log.info('proxy server up', { tunnel: tunnelPort, fronts: listening.join(', ') });
    await runUntilSignal(async () => {
      clearInterval(gauge);
      meta?.server.close();
      await front.close();
      await hub.close();
    }, log);
    return 0;
  }
  const tls = { ca: cert(CERT_FILES.tunnelCA), cert: cert(CERT_FILES.clientCert), key: cert(CERT_FILES.clientKey) };
  const allowed = (): Set<number> => new Set([...config.ports.http, ...config.ports.https]);
  const clients = config.client!.servers.map(
    (server) =>
      new TunnelClient({
        gateway: config.gateway,
        server,
        tls,
        log: say,
        resolve: (node, port) => {
          const n = config.nodes.get(node);
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

