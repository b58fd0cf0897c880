/**
 * The Gateway object (`raven.openyurt.io/v1beta1`) as the runtime reads and writes it, plus the
 * few parts of a Node it needs. Plain interfaces (no client library types), so the pure core
 * (membership, election, status) is testable without a cluster.
 */
import type { EndpointType } from '../topology/model.js';
import { canonicalIP, canonicalPort, canonicalSubnet, type Dropped, isObject, objectName, shown, wireGuardKey } from '../platform/canonical.js';

/**
 * Key in the active tunnel endpoint's `config` (a free-form map in OpenYurt's schema): JSON
 * `{node: publicKey}` of the Gateway's other tunnel candidates. Remote gateways add these keys in
 * advance, so a new active gateway's first handshake is accepted at once on failover instead of
 * after WireGuard's 5 s retry.
 */
export const STANDBY_KEYS_CONFIG = 'raven-gitops.io/standby-public-keys';

export interface GatewayEndpoint {
  nodeName: string;
  type: EndpointType;
  port?: number;
  underNAT?: boolean;
  natType?: string;
  publicIP?: string;
  publicPort?: number;
  config?: Record<string, string>;
}

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist' | string;
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export interface GatewayNodeInfo {
  nodeName: string;
  privateIP: string;
  subnets: string[];
}

export interface Gateway {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; resourceVersion?: string; annotations?: Record<string, string>; labels?: Record<string, string>; uid?: string };
  spec?: {
    nodeSelector?: LabelSelector;
    exposeType?: string;
    endpoints?: GatewayEndpoint[];
    tunnelConfig?: { Replicas?: number };
    proxyConfig?: { Replicas?: number; proxyHTTPPort?: string; proxyHTTPSPort?: string };
  };
  status?: { activeEndpoints?: GatewayEndpoint[]; nodes?: GatewayNodeInfo[] };
}

export interface NodeLike {
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: { podCIDR?: string; podCIDRs?: string[]; unschedulable?: boolean };
  status?: {
    conditions?: { type: string; status: string; lastTransitionTime?: string | Date }[];
    addresses?: { type: string; address: string }[];
  };
}

export function isNodeReady(node: NodeLike): boolean {
  return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

/**
 * `natType` on an endpoint: a STUN classification name (`Symmetric NAT`, `Port Restricted cone
 * NAT`, `Undefined`, ...). The set depends on the STUN library that wrote it, so any short plain
 * name is kept; it is only ever compared, never rendered.
 */
const NAT_TYPE = /^[A-Za-z][A-Za-z -]{0,39}$/;
const ENDPOINT_TYPES: readonly string[] = ['tunnel', 'proxy'];
const EXPOSE_TYPES: readonly string[] = ['', 'PublicIP', 'LoadBalancer'];
/** Endpoint `config` is free-form in OpenYurt: only short string entries are kept. */
const CONFIG_KEY = /^[A-Za-z0-9]([-A-Za-z0-9_./]{0,126}[A-Za-z0-9])?$/;
const MAX_CONFIG_VALUE = 16 * 1024;

export interface ParsedGateway {
  /** The Gateway with only values that parsed, in canonical form; undefined when its name is bad. */
  readonly gateway?: Gateway;
  readonly dropped: readonly Dropped[];
}

/**
 * A Gateway as read from the API, reduced to what parses. Anyone who may write Gateways or their
 * status, and every node (through the addresses the controller copies), has a say in these
 * values, and they end up in routes, tunnel peers and proxy targets on every node. Each endpoint,
 * node entry, address, range, port and key is checked on its own: a bad one is left out and
 * reported, the rest of the Gateway keeps working. Pure.
 */
export function parseGateway(raw: unknown): ParsedGateway {
  const o = raw as Partial<Gateway> | undefined;
  const name = objectName(o?.metadata?.name);
  if (!name.ok) return { dropped: [{ source: 'gateway', kind: 'gateway-name', reason: name.reason }] };
  const source = name.value;
  const dropped: Dropped[] = [];
  const drop = (kind: string, reason: string): void => void dropped.push({ source, kind, reason });
  const spec = isObject(o!.spec) ? o!.spec : undefined;
  const status = isObject(o!.status) ? o!.status : undefined;
  const exposeType = spec?.exposeType ?? '';
  if (!EXPOSE_TYPES.includes(exposeType)) drop('expose-type', `exposeType ${shown(exposeType)} is not PublicIP or LoadBalancer; treated as not exposed`);
  const endpoints = (list: unknown, where: string): GatewayEndpoint[] | undefined =>
    Array.isArray(list) ? list.flatMap((e, i) => parseEndpoint(e, `${where}[${i}]`, drop)) : undefined;
  const specEndpoints = endpoints(spec?.endpoints, 'spec.endpoints');
  const active = endpoints(status?.activeEndpoints, 'status.activeEndpoints');
  const nodes = Array.isArray(status?.nodes) ? status!.nodes.flatMap((n, i) => parseNodeEntry(n, `status.nodes[${i}]`, drop)) : undefined;
  const meta = o!.metadata!;
  const gateway: Gateway = {
    ...(o!.apiVersion && { apiVersion: o!.apiVersion }),
    ...(o!.kind && { kind: o!.kind }),
    metadata: {
      name: source,
      ...(typeof meta.resourceVersion === 'string' && { resourceVersion: meta.resourceVersion }),
      ...(typeof meta.uid === 'string' && { uid: meta.uid }),
      ...(isStringMap(meta.annotations) && { annotations: meta.annotations }),
      ...(isStringMap(meta.labels) && { labels: meta.labels }),
    },
    ...(spec && {
      spec: {
        ...(isObject(spec.nodeSelector) && { nodeSelector: spec.nodeSelector }),
        ...(EXPOSE_TYPES.includes(exposeType) && exposeType && { exposeType }),
        ...(specEndpoints && { endpoints: specEndpoints }),
        ...(isObject(spec.tunnelConfig) && { tunnelConfig: spec.tunnelConfig }),
        ...(isObject(spec.proxyConfig) && { proxyConfig: spec.proxyConfig }),
      },
    }),
    ...(status && { status: { ...(active && { activeEndpoints: active }), ...(nodes && { nodes }) } }),
  };
  return { gateway, dropped };
}

function parseEndpoint(raw: unknown, where: string, drop: (kind: string, reason: string) => void): GatewayEndpoint[] {
  if (!isObject(raw)) return [];
  const e = raw as Partial<GatewayEndpoint>;
  const node = objectName(e.nodeName);
  if (!node.ok) return drop('endpoint', `${where}: nodeName ${node.reason}`), [];
  if (!ENDPOINT_TYPES.includes(e.type as string)) return drop('endpoint', `${where}: type ${shown(e.type)} is not tunnel or proxy`), [];
  const out: GatewayEndpoint = { nodeName: node.value, type: e.type as EndpointType };
  if (e.port !== undefined) {
    const p = canonicalPort(e.port);
    if (!p.ok) return drop('port', `${where} (${node.value}): port ${p.reason}`), [];
    out.port = p.value;
  }
  if (typeof e.underNAT === 'boolean') out.underNAT = e.underNAT;
  if (e.natType !== undefined && e.natType !== '') {
    if (typeof e.natType === 'string' && NAT_TYPE.test(e.natType)) out.natType = e.natType;
    else drop('nat-type', `${where} (${node.value}): natType ${shown(e.natType)} is not a NAT type name`);
  }
  if (e.publicIP !== undefined && e.publicIP !== '') {
    const ip = canonicalIP(e.publicIP);
    if (ip.ok) out.publicIP = ip.value;
    else drop('public-ip', `${where} (${node.value}): publicIP ${ip.reason}`);
  }
  if (e.publicPort !== undefined) {
    const p = canonicalPort(e.publicPort);
    if (p.ok) out.publicPort = p.value;
    else drop('port', `${where} (${node.value}): publicPort ${p.reason}`);
  }
  if (isObject(e.config)) {
    const config: Record<string, string> = {};
    for (const [k, v] of Object.entries(e.config)) {
      if (!CONFIG_KEY.test(k) || typeof v !== 'string' || v.length > MAX_CONFIG_VALUE) {
        drop('config', `${where} (${node.value}): config entry ${shown(k, 40)} is not a short string entry`);
        continue;
      }
      if (k === 'publicKey') {
        const key = wireGuardKey(v);
        if (!key.ok) {
          drop('public-key', `${where} (${node.value}): publicKey ${key.reason}`);
          continue;
        }
      }
      config[k] = v;
    }
    out.config = config;
  }
  return [out];
}

function parseNodeEntry(raw: unknown, where: string, drop: (kind: string, reason: string) => void): GatewayNodeInfo[] {
  if (!isObject(raw)) return [];
  const n = raw as Partial<GatewayNodeInfo>;
  const name = objectName(n.nodeName);
  if (!name.ok) return drop('node', `${where}: nodeName ${name.reason}`), [];
  let privateIP = '';
  if (n.privateIP) {
    const ip = canonicalIP(n.privateIP);
    if (ip.ok) privateIP = ip.value;
    else drop('node-ip', `${where} (${name.value}): privateIP ${ip.reason}`);
  }
  const subnets = new Set<string>();
  for (const s of Array.isArray(n.subnets) ? n.subnets : []) {
    const p = canonicalSubnet(s);
    if (p.ok) subnets.add(p.value);
    else drop('subnet', `${where} (${name.value}): ${p.reason}`);
  }
  return [{ nodeName: name.value, privateIP, subnets: [...subnets].sort() }];
}


function isStringMap(v: unknown): v is Record<string, string> {
  return isObject(v) && Object.values(v).every((x) => typeof x === 'string');
}
