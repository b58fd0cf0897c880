/**
 * The L7 proxy's configuration: the JSON the agent writes from Gateway status (`ProxyConfig`), and
 * its strict parse into canonical values (`ProxySettings`) at the proxy's boundary. Gateway status
 * is hostile (a node writes its own InternalIP, and the API does not check it), so every node,
 * address and port is parsed one item at a time: a bad item is dropped with its reason and counted,
 * its neighbours keep working. Only what would make the whole process meaningless (role, own
 * gateway, listen addresses) fails the parse.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ipaddr from 'ipaddr.js';
import { canonicalIP, canonicalPort, type Dropped, objectName, shown } from '../platform/canonical.js';
import { parseListenAddr } from '../platform/http-endpoints.js';

/** Where a pod's ServiceAccount finds the cluster CA: the default CA for nodes' TLS. */
export const SERVICE_ACCOUNT_CA = '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt';

/**
 * Files of the mounted certificate directory (`raven-proxy-certs`, at /etc/raven/proxy): the
 * tunnel CA, the cloud endpoints' server pair, an edge region's own client pair (CN `gw-<region>`)
 * and the CA that signs the clients of the HTTPS front (kube-apiserver's kubelet-client or
 * front-proxy CA).
 */
export const CERT_FILES = {
  tunnelCA: 'ca.crt',
  serverCert: 'server.crt',
  serverKey: 'server.key',
  clientCert: 'client.crt',
  clientKey: 'client.key',
  frontClientCA: 'client-ca.crt',
  /** Optional: the CA of the nodes' serving certificates, where it is not the ServiceAccount's. */
  nodeCA: 'node-ca.crt',
} as const;

/** What the agent writes (JSON). Everything in it is re-parsed by `parseProxyConfig`. */
export interface ProxyConfig {
  readonly role: 'server' | 'client';
  readonly gateway: string;
  readonly certDir: string;
  /** /healthz, /readyz and /metrics (Prometheus). */
  readonly metricsAddr?: string;
  /** This node's address: fronts configured without a host listen here and on loopback. */
  readonly nodeIP?: string;
  /** CA that signs the nodes' serving certificates (HTTPS towards nodes). @default SERVICE_ACCOUNT_CA */
  readonly nodeCA?: string;
  /** node name → its Gateway and address (as seen inside its own region). */
  readonly nodes: Readonly<Record<string, { readonly gateway: string; readonly ip: string }>>;
  readonly ports: { readonly http: readonly number[]; readonly https: readonly number[] };
  readonly server?: { readonly tunnelAddr: string; readonly httpAddr: string; readonly httpsAddr: string };
  readonly client?: { readonly servers: readonly { readonly host: string; readonly port: number }[] };
}

export interface ListenAddr {
  readonly host: string;
  readonly port: number;
}

export interface NodeEntry {
  readonly gateway: string;
  /** Canonical unicast address. */
  readonly ip: string;
}

/** The parsed configuration: canonical, frozen values only. */
export interface ProxySettings {
  readonly role: 'server' | 'client';
  readonly gateway: string;
  readonly certDir: string;
  readonly metricsAddr?: string;
  /** The nodeCA file as configured; `nodeCAFile` says which file is used. */
  readonly nodeCA?: string;
  readonly nodes: ReadonlyMap<string, NodeEntry>;
  readonly ports: { readonly http: readonly number[]; readonly https: readonly number[] };
  readonly server?: {
    /** The public tunnel port: all addresses (edges must reach it). */
    readonly tunnel: ListenAddr;
    /** The fronts: concrete addresses only, never 0.0.0.0 or ::. */
    readonly http: readonly ListenAddr[];
    readonly https: readonly ListenAddr[];
  };
  readonly client?: { readonly servers: readonly { readonly host: string; readonly port: number }[] };
  /** Items refused, with the reason; counted in `raven_proxy_config_items_dropped_total{kind}`. */
  readonly dropped: readonly Dropped[];
}

/** Kinds of dropped items, pre-initialised in the metric. */
export const DROPPED_KINDS = ['node', 'node-ip', 'port', 'server'] as const;

const WILDCARDS = new Set(['', '0.0.0.0', '::', '[::]', '*']);

/**
 * Where a front listens: a configured concrete host as is; a configured host that is empty or a
 * wildcard becomes this node's address plus loopback (kube-apiserver on the same node), never all
 * addresses of a host-network gateway.
 */
export function frontAddrs(text: string, nodeIP: string | undefined): ListenAddr[] {
  const { host, port } = parseListenAddr(text);
  if (!WILDCARDS.has(host)) return [{ host: ipaddr.isValid(host) ? ipaddr.parse(host).toString() : host, port }];
  const node = nodeIP !== undefined && ipaddr.isValid(nodeIP) ? ipaddr.parse(nodeIP) : undefined;
  const loopback = node?.kind() === 'ipv6' ? '::1' : '127.0.0.1';
  const hosts = [...(node && node.range() !== 'unspecified' ? [node.toString()] : []), loopback];
  return [...new Set(hosts)].map((h) => ({ host: h, port }));
}

const portList = (v: unknown, scheme: string, dropped: Dropped[]): number[] => {
  const out = new Set<number>();
  for (const p of Array.isArray(v) ? v : []) {
    const r = canonicalPort(p);
    if (r.ok) out.add(r.value);
    else dropped.push({ source: `ports.${scheme}`, kind: 'port', reason: r.reason });
  }
  return [...out].sort((a, b) => a - b);
};

/** A server to dial: an IP (canonical) or a DNS name, and a port. */
export function parseServer(v: unknown): { ok: true; value: { host: string; port: number } } | { ok: false; reason: string } {
  const s = (v ?? {}) as { host?: unknown; port?: unknown };
  const port = canonicalPort(s.port);
  if (!port.ok) return port;
  const ip = canonicalIP(s.host);
  if (ip.ok) return { ok: true, value: { host: ip.value, port: port.value } };
  const name = objectName(s.host);
  if (name.ok && !/^[0-9.]+$/.test(name.value)) return { ok: true, value: { host: name.value, port: port.value } };
  return { ok: false, reason: `${shown(s.host)} is neither an IP address nor a DNS name` };
}

/** Parses the agent's JSON strictly; throws only when the process could not do its job at all. */
export function parseProxyConfig(json: unknown): ProxySettings {
  const c = (json ?? {}) as Partial<Record<keyof ProxyConfig, unknown>>;
  const dropped: Dropped[] = [];
  if (c.role !== 'server' && c.role !== 'client') throw new Error(`role must be server or client, not ${shown(c.role)}`);
  const gateway = objectName(c.gateway);
  if (!gateway.ok) throw new Error(`gateway: ${gateway.reason}`);
  if (typeof c.certDir !== 'string' || !c.certDir) throw new Error('certDir is required');
  if (c.metricsAddr !== undefined) parseListenAddr(c.metricsAddr);
  if (c.nodeCA !== undefined && (typeof c.nodeCA !== 'string' || !c.nodeCA)) throw new Error(`nodeCA must be a file name, not ${shown(c.nodeCA)}`);
  const nodes = new Map<string, NodeEntry>();
  const rawNodes = c.nodes && typeof c.nodes === 'object' ? (c.nodes as Record<string, unknown>) : {};
  for (const name of Object.keys(rawNodes).sort()) {
    const n = (rawNodes[name] ?? {}) as { gateway?: unknown; ip?: unknown };
    const nodeName = objectName(name);
    if (!nodeName.ok) {
      dropped.push({ source: 'nodes', kind: 'node', reason: nodeName.reason });
      continue;
    }
    const gw = objectName(n.gateway);
    if (!gw.ok) {
      dropped.push({ source: `node/${name}`, kind: 'node', reason: `gateway: ${gw.reason}` });
      continue;
    }
    const ip = canonicalIP(n.ip);
    if (!ip.ok) {
      dropped.push({ source: `node/${name}`, kind: 'node-ip', reason: ip.reason });
      continue;
    }
    nodes.set(name, Object.freeze({ gateway: gw.value, ip: ip.value }));
  }
  const rawPorts = (c.ports ?? {}) as { http?: unknown; https?: unknown };
  const ports = Object.freeze({ http: Object.freeze(portList(rawPorts.http, 'http', dropped)), https: Object.freeze(portList(rawPorts.https, 'https', dropped)) });
  const nodeIP = typeof c.nodeIP === 'string' ? c.nodeIP : undefined;
  let server: ProxySettings['server'];
  if (c.role === 'server') {
    const s = c.server as Partial<Record<'tunnelAddr' | 'httpAddr' | 'httpsAddr', unknown>> | undefined;
    if (!s || typeof s.tunnelAddr !== 'string' || typeof s.httpAddr !== 'string' || typeof s.httpsAddr !== 'string') throw new Error('a server needs server.{tunnelAddr,httpAddr,httpsAddr}');
    server = Object.freeze({ tunnel: parseListenAddr(s.tunnelAddr), http: frontAddrs(s.httpAddr, nodeIP), https: frontAddrs(s.httpsAddr, nodeIP) });
  }
  let client: ProxySettings['client'];
  if (c.role === 'client') {
    const servers: { host: string; port: number }[] = [];
    const raw = (c.client as { servers?: unknown } | undefined)?.servers;
    for (const v of Array.isArray(raw) ? raw : []) {
      const r = parseServer(v);
      if (r.ok) servers.push(r.value);
      else dropped.push({ source: 'client.servers', kind: 'server', reason: r.reason });
    }
    if (!servers.length) throw new Error('a client needs client.servers (none usable)');
    client = Object.freeze({ servers });
  }
  return Object.freeze({
    role: c.role,
    gateway: gateway.value,
    certDir: c.certDir,
    ...(typeof c.metricsAddr === 'string' && { metricsAddr: c.metricsAddr }),
    ...(typeof c.nodeCA === 'string' && { nodeCA: c.nodeCA }),
    nodes,
    ports,
    ...(server && { server }),
    ...(client && { client }),
    dropped: Object.freeze(dropped),
  });
}

/** The file with the nodes' CA: as configured, else node-ca.crt of the cert dir, else the ServiceAccount's. */
export function nodeCAFile(c: Pick<ProxySettings, 'nodeCA' | 'certDir'>, exists: (file: string) => boolean): string {
  if (c.nodeCA) return c.nodeCA;
  const inDir = join(c.certDir, CERT_FILES.nodeCA);
  return exists(inDir) ? inDir : SERVICE_ACCOUNT_CA;
}

export function readProxyConfig(file: string): ProxySettings {
  try {
    return parseProxyConfig(JSON.parse(readFileSync(file, 'utf8')));
  } catch (cause) {
    throw new Error(`failed to read the proxy configuration ${file}`, { cause });
  }
}
