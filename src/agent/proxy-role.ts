/**
 * Whether this node runs the L7 proxy, and with what configuration (pure), plus the small runner
 * that keeps a `raven proxy` process matching it. A node runs the proxy when it is an active proxy
 * endpoint of its Gateway with `enable-l7-proxy`: as the server when it accepts dials (its region is
 * exposed and it is not behind NAT), as a client otherwise, dialling every other region's active
 * proxy endpoints that are dialable (src/topology/mesh.ts). The fronts serve the proxy ports of
 * every exposed region, as the compiler's in-cluster proxy Service does.
 *
 * Gateway status is hostile (a node writes its own InternalIP): every node name, address and port
 * is parsed here, one item at a time, and only canonical values reach the config file; a bad item
 * is dropped (`onDrop`), its neighbours kept. The proxy parses the file again at its own boundary.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DEFAULT_PROXY_PORT } from '../contract/names.js';
import type { Logger } from '../platform/log.js';
import type { Gateway } from '../contract/gateway.js';
import { ravenCommand } from '../platform/raven-command.js';
import { canonicalIP, canonicalPort, type Dropped, objectName } from '../platform/canonical.js';
import type { ProxyConfig } from '../contract/proxy-config.js';
import { L7_PROXY_KEY } from '../contract/raven-cfg.js';
import { isAlive, stopOwnedProcess } from '../platform/owned-process.js';
import { acceptsDials, isDialable, isExposed } from '../topology/mesh.js';

export interface ProxyAddresses {
  readonly certDir: string;
  readonly tunnelAddr: string;
  readonly httpAddr: string;
  readonly httpsAddr: string;
  readonly metricsAddr: string;
  /** This node's address: fronts without a configured host listen here and on loopback, never on all addresses. */
  readonly nodeIP?: string;
  /** CA of the nodes' serving certificates (HTTPS towards nodes). @default `<certDir>/node-ca.crt`, else the ServiceAccount's ca.crt */
  readonly nodeCA?: string;
}

/** A comma-separated port list from a Gateway's spec: `10255,9445`; anything else is dropped. */
const ports = (text: unknown, source: string, drop: (d: Dropped) => void): number[] =>
  (typeof text === 'string' ? text : '')
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)
    .flatMap((p) => {
      const r = canonicalPort(/^\d{1,5}$/.test(p) ? Number(p) : p);
      if (!r.ok) drop({ source, kind: 'port', reason: r.reason });
      return r.ok ? [r.value] : [];
    });

export function proxyConfigFor(gateways: readonly Gateway[], node: string, a: ProxyAddresses, onDrop: (d: Dropped) => void = () => undefined): ProxyConfig | undefined {
  const sorted = [...gateways].sort((x, y) => (x.metadata.name < y.metadata.name ? -1 : 1));
  const mine = sorted.find((g) => g.status?.nodes?.some((n) => n.nodeName === node));
  const me = mine?.status?.activeEndpoints?.find((e) => e.type === 'proxy' && e.nodeName === node);
  if (!mine || !me || me.config?.[L7_PROXY_KEY] !== 'true') return undefined;
  const gatewayName = objectName(mine.metadata.name);
  if (!gatewayName.ok) {
    onDrop({ source: 'gateway', kind: 'gateway', reason: gatewayName.reason });
    return undefined;
  }
  const nodes: Record<string, { gateway: string; ip: string }> = {};
  for (const g of sorted) {
    const gw = objectName(g.metadata.name);
    if (!gw.ok) {
      onDrop({ source: 'gateway', kind: 'gateway', reason: gw.reason });
      continue;
    }
    for (const n of g.status?.nodes ?? []) {
      const name = objectName(n.nodeName);
      if (!name.ok) {
        onDrop({ source: gw.value, kind: 'node', reason: name.reason });
        continue;
      }
      if (!n.privateIP) continue;
      const ip = canonicalIP(n.privateIP);
      if (!ip.ok) {
        onDrop({ source: `node/${name.value}`, kind: 'node-ip', reason: ip.reason });
        continue;
      }
      nodes[name.value] = { gateway: gw.value, ip: ip.value };
    }
  }
  const http = new Set<number>();
  const https = new Set<number>();
  for (const g of sorted.filter((x) => isExposed(x.spec?.exposeType))) {
    for (const p of ports(g.spec?.proxyConfig?.proxyHTTPPort, `${g.metadata.name} proxyHTTPPort`, onDrop)) http.add(p);
    for (const p of ports(g.spec?.proxyConfig?.proxyHTTPSPort, `${g.metadata.name} proxyHTTPSPort`, onDrop)) https.add(p);
  }
  // The fronts bind to this node's address: the agent's own (--node-ip) when given, else what
  // this node published in its Gateway's status.
  const nodeIP = canonicalIP(a.nodeIP ?? mine.status?.nodes?.find((n) => n.nodeName === node)?.privateIP);
  const base = {
    gateway: gatewayName.value,
    certDir: a.certDir,
    metricsAddr: a.metricsAddr,
    ...(nodeIP.ok && { nodeIP: nodeIP.value }),
    ...(a.nodeCA && { nodeCA: a.nodeCA }),
    nodes,
    ports: { http: [...http].sort((x, y) => x - y), https: [...https].sort((x, y) => x - y) },
  };
  if (acceptsDials(mine.spec?.exposeType, me)) return { ...base, role: 'server', server: { tunnelAddr: a.tunnelAddr, httpAddr: a.httpAddr, httpsAddr: a.httpsAddr } };
  const servers: { host: string; port: number }[] = [];
  for (const g of sorted.filter((x) => x !== mine)) {
    for (const e of (g.status?.activeEndpoints ?? []).filter((x) => x.type === 'proxy' && isDialable(g.spec?.exposeType, x))) {
      const host = canonicalIP(e.publicIP);
      const port = canonicalPort(e.port ?? DEFAULT_PROXY_PORT);
      if (!host.ok || !port.ok) onDrop({ source: g.metadata.name, kind: 'server', reason: host.ok ? (port as { reason: string }).reason : host.reason });
      else servers.push({ host: host.value, port: port.value });
    }
  }
  return servers.length ? { ...base, role: 'client', client: { servers } } : undefined;
}

/** Keeps one `raven proxy` process matching the desired config: started, reloaded (SIGHUP), restarted or stopped. */
export class ProxyRunner {
  private readonly configFile: string;
  private readonly pidFile: string;
  private role?: string;
  private desired?: ProxyConfig;

  constructor(stateDir: string, private readonly netns: string | undefined, private readonly log: Logger) {
    this.configFile = join(stateDir, 'proxy.json');
    this.pidFile = join(stateDir, 'proxy.pid');
  }

  private pid(): number | undefined {
    if (!existsSync(this.pidFile)) return undefined;
    const pid = Number(readFileSync(this.pidFile, 'utf8'));
    try {
      return pid > 0 && isAlive(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(this.configFile) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Restarts the proxy if it should run and died (or was killed). */
  async ensure(): Promise<void> {
    if (this.desired && this.pid() === undefined) {
      this.log.warn('L7 proxy not running; restarting it');
      this.role = undefined;
      await this.set(this.desired);
    }
  }

  async set(desired: ProxyConfig | undefined): Promise<void> {
    this.desired = desired;
    if (!desired) return this.stop();
    const text = JSON.stringify(desired, null, 1) + '\n';
    const before = existsSync(this.configFile) ? readFileSync(this.configFile, 'utf8') : undefined;
    const running = this.pid();
    if (running !== undefined && before === text && this.role === desired.role) return;
    this.desired = desired;
    mkdirSync(dirname(this.configFile), { recursive: true, mode: 0o700 });
    writeFileSync(this.configFile, text, { mode: 0o600 });
    if (running !== undefined && this.role === desired.role) {
      process.kill(running, 'SIGHUP');
      return;
    }
    // Not ours yet (first start, or left by a previous agent whose role we do not know): start afresh.
    if (running !== undefined) await stopOwnedProcess(running, () => this.pid() === running, 3000);
    const [node, bin] = ravenCommand();
    const cmd = this.netns ? ['ip', 'netns', 'exec', this.netns, node, bin] : [node, bin];
    const child = spawn(cmd[0]!, [...cmd.slice(1), 'proxy', '--config', this.configFile], { stdio: 'inherit', detached: true });
    child.unref();
    writeFileSync(this.pidFile, String(child.pid));
    this.role = desired.role;
    this.log.info('L7 proxy started', { role: desired.role, gateway: desired.gateway });
  }

  async stop(): Promise<void> {
    const pid = this.pid();
    if (pid !== undefined) {
      await stopOwnedProcess(pid, () => this.pid() === pid, 3000);
      this.log.info('L7 proxy stopped');
    }
    rmSync(this.pidFile, { force: true });
    rmSync(this.configFile, { force: true });
    this.role = undefined;
    this.desired = undefined;
  }
}
