/**
 * The Gateway object (`raven.openyurt.io/v1beta1`), once: its type (spec and status, field for
 * field OpenYurt's), `renderGateway` that the compiler writes it with, and the tolerant
 * `parseGateway` that the controller and the agent read it with; plus the few parts of a Node the
 * runtime needs. Plain interfaces (no client library types), so the pure core (membership,
 * election, status) is testable without a cluster.
 */
import type { EndpointType, Region } from '../topology/model.js';
import { GATEWAY_API_VERSION, MEMBER_NODES_ANNOTATION, POD_CIDRS_ANNOTATION, REGION_LABEL, REGION_TYPE_LABEL } from './names.js';
import type { RavenSwitches } from './raven-cfg.js';
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

/** How other regions reach the gateway; '' (or absent) is not exposed. */
export type ExposeType = '' | 'PublicIP' | 'LoadBalancer';

/** OpenYurt's field names, capital `Replicas` included. */
export interface GatewayTunnelConfig {
  Replicas?: number;
}

export interface GatewayProxyConfig {
  Replicas?: number;
  /** Comma-separated HTTP ports proxied to edge nodes. */
  proxyHTTPPort?: string;
  /** Comma-separated HTTPS ports proxied to edge nodes. */
  proxyHTTPSPort?: string;
}

/** Written by git (the compiler); the controller never rewrites it. */
export interface GatewaySpec {
  nodeSelector?: LabelSelector;
  /** An ExposeType once parsed; `string` so hand-built test objects need no casts. */
  exposeType?: string;
  /** Candidates in priority order. */
  endpoints?: GatewayEndpoint[];
  tunnelConfig?: GatewayTunnelConfig;
  proxyConfig?: GatewayProxyConfig;
}

/** Written by the controller (the status subresource). */
export interface GatewayStatus {
  activeEndpoints?: GatewayEndpoint[];
  nodes?: GatewayNodeInfo[];
}

export interface GatewayMetadata {
  name: string;
  resourceVersion?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  uid?: string;
}

export interface Gateway {
  apiVersion?: string;
  kind?: string;
  metadata: GatewayMetadata;
  spec?: GatewaySpec;
  status?: GatewayStatus;
}

/** A Gateway as the compiler writes it: the spec only, never a status. */
export interface RenderedGateway {
  readonly apiVersion: typeof GATEWAY_API_VERSION;
  readonly kind: 'Gateway';
  readonly metadata: { readonly name: string; readonly labels: Record<string, string>; readonly annotations?: Record<string, string> };
  readonly spec: RenderedGatewaySpec;
}

export type RenderedGatewaySpec = Omit<GatewaySpec, 'exposeType'> & { exposeType?: Exclude<ExposeType, ''> };

/**
 * One region's Gateway, in OpenYurt's shape (it validates against OpenYurt's own CRD). Each part is
 * built as its contract type, so no field outside it can be written. `switches` are raven-cfg's:
 * with a switch off no endpoint of that type is elected, so its Replicas is 0. Pure; collections
 * are sorted where order carries no meaning, endpoints stay in priority order.
 */
export function renderGateway(r: Region, switches: RavenSwitches): RenderedGateway {
  const annotations: Record<string, string> = {};
  if (r.nodes.length) annotations[MEMBER_NODES_ANNOTATION] = [...r.nodes].sort().join(',');
  if (r.podCIDRs.length) annotations[POD_CIDRS_ANNOTATION] = [...r.podCIDRs].sort().join(',');
  const ports = (list: readonly number[]): string => [...list].sort((a, b) => a - b).join(',');
  const proxyConfig: GatewayProxyConfig = { Replicas: switches.l7Proxy ? r.replicas.proxy : 0 };
  if (r.proxyPorts.http.length) proxyConfig.proxyHTTPPort = ports(r.proxyPorts.http);
  if (r.proxyPorts.https.length) proxyConfig.proxyHTTPSPort = ports(r.proxyPorts.https);
  const spec: RenderedGatewaySpec = {
    tunnelConfig: { Replicas: switches.l3Tunnel ? r.replicas.tunnel : 0 },
    proxyConfig,
    endpoints: r.endpoints.map((e) => {
      const endpoint: GatewayEndpoint = { nodeName: e.node, type: e.type, port: e.port, underNAT: r.underNAT };
      if (e.publicIP !== undefined) endpoint.publicIP = e.publicIP;
      return endpoint;
    }),
  };
  if (r.nodeSelector) spec.nodeSelector = { matchLabels: { ...r.nodeSelector } };
  if (r.exposure !== 'none') spec.exposeType = r.exposure;
  return {
    apiVersion: GATEWAY_API_VERSION,
    kind: 'Gateway',
    metadata: {
      name: r.gatewayName,
      labels: { [REGION_LABEL]: r.name, [REGION_TYPE_LABEL]: r.type },
      ...(Object.keys(annotations).length && { annotations }),
    },
    spec,
  };
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
  // Still unchecked below: each field is checked on its own.
  const spec: Partial<GatewaySpec> | undefined = isObject(o!.spec) ? o!.spec : undefined;
  const status: Partial<GatewayStatus> | undefined = isObject(o!.status) ? o!.status : undefined;
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
