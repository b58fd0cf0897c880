/**
 * The in-cluster entry of the L7 proxy. The compiler emits `x-raven-proxy-internal-svc` without a
 * selector (src/compiler/constructs/proxy-service.ts); the controller points it, through one EndpointSlice
 * per address family, at the nodes of the active proxy endpoints of exposed regions, on the
 * Service's own target ports (the fronts' 10264 plain / 10263 HTTPS). Raven keeps the same Service
 * and an Endpoints object (yurt-manager's gateway-internal-service controller). Cluster-wide, not
 * per Gateway. Pure: the controller applies the difference.
 */
import { canonicalPort, type Dropped, shown } from '../platform/canonical.js';
import type { Gateway } from '../contract/gateway.js';
import { PROXY_SERVICE_NAME, SLICE_MANAGED_BY_LABEL, SLICE_MANAGER, SLICE_SERVICE_LABEL } from '../contract/names.js';
import { addressType, type ServiceLike } from './exposure.js';
import { acceptsDials, isExposed } from '../topology/mesh.js';

/** The work-queue key of this aggregate: a `/` never occurs in a Gateway name, so it cannot collide. */
export const PROXY_ENTRY_KEY = `services/${PROXY_SERVICE_NAME}`;

export type AddressType = 'IPv4' | 'IPv6';

export interface SlicePort {
  readonly name: string;
  readonly protocol: string;
  readonly port: number;
}

export interface SliceEndpoint {
  readonly addresses: readonly string[];
  readonly nodeName: string;
  readonly conditions: { readonly ready: boolean };
}

export interface EndpointSliceLike {
  readonly apiVersion: 'discovery.k8s.io/v1';
  readonly kind: 'EndpointSlice';
  readonly metadata: { readonly name: string; readonly namespace: string; readonly labels: Readonly<Record<string, string>> };
  readonly addressType: AddressType;
  readonly endpoints: readonly SliceEndpoint[];
  readonly ports: readonly SlicePort[];
}

export interface ProxyEntryInput {
  /** Parsed Gateways (parseGateway): status addresses already canonical, bad entries left out. */
  readonly gateways: readonly Gateway[];
  /** `enable-l7-proxy` in raven-cfg. */
  readonly l7Proxy: boolean;
  /** The compiled Service as the cluster has it; undefined when it does not exist. */
  readonly service: ServiceLike | undefined;
  readonly namespace: string;
}

export interface ProxyEntry {
  /** Sorted by name (IPv4 first); empty when the entry must not exist. */
  readonly slices: EndpointSliceLike[];
  /** Why there is no slice at all, for the log; undefined when there is one. */
  readonly none?: string;
  readonly dropped: Dropped[];
}

/** `x-raven-proxy-internal-svc-ipv4` / `-ipv6`: stable, one per family. */
export function proxySliceName(family: AddressType): string {
  return `${PROXY_SERVICE_NAME}-${family.toLowerCase()}`;
}

/**
 * The Service's ports as an EndpointSlice carries them: same name and protocol, the target port
 * as the port. A named target port cannot be resolved without pods, so it is left out (reported).
 */
export function slicePorts(svc: ServiceLike, dropped: Dropped[] = []): SlicePort[] {
  const raw = svc.spec?.ports;
  const out = new Map<string, SlicePort>();
  for (const [i, p] of (Array.isArray(raw) ? raw : []).entries()) {
    const where = `Service ${svc.metadata.name} spec.ports[${i}]`;
    const o = (p ?? {}) as { name?: unknown; protocol?: unknown; port?: unknown; targetPort?: unknown };
    const name = typeof o.name === 'string' ? o.name : '';
    const protocol = typeof o.protocol === 'string' && o.protocol ? o.protocol : 'TCP';
    const target = o.targetPort ?? o.port;
    const port = canonicalPort(typeof target === 'string' && /^\d+$/.test(target) ? Number(target) : target);
    if (!port.ok) {
      dropped.push({ source: PROXY_SERVICE_NAME, kind: 'port', reason: `${where}: targetPort ${shown(target)} is not a port number (${port.reason}); a selector-less Service needs numbers` });
      continue;
    }
    if (out.has(name)) dropped.push({ source: PROXY_SERVICE_NAME, kind: 'port', reason: `${where}: name ${shown(name)} is used twice; the first is kept` });
    else out.set(name, { name, protocol, port: port.value });
  }
  return [...out.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Where the proxy's in-cluster entry should lead. Deterministic: the same for any input order. */
export function desiredProxyEntry(input: ProxyEntryInput): ProxyEntry {
  const dropped: Dropped[] = [];
  if (!input.l7Proxy) return { slices: [], none: 'enable-l7-proxy is off in raven-cfg', dropped };
  if (!input.service) return { slices: [], none: `Service ${PROXY_SERVICE_NAME} does not exist in ${input.namespace}`, dropped };
  const ports = slicePorts(input.service, dropped);
  if (!ports.length) return { slices: [], none: `Service ${PROXY_SERVICE_NAME} has no usable ports`, dropped };

  // address → node, smallest node name first when two nodes claim one address.
  const byAddress = new Map<string, string>();
  const gateways = [...input.gateways].sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
  for (const gw of gateways) {
    const exposeType = gw.spec?.exposeType;
    if (!isExposed(exposeType)) continue;
    const nodes = gw.status?.nodes ?? [];
    for (const e of gw.status?.activeEndpoints ?? []) {
      // A proxy endpoint behind NAT serves nobody (the agent's proxy role makes it a client).
      if (e.type !== 'proxy' || !acceptsDials(exposeType, e)) continue;
      const address = nodes.find((n) => n.nodeName === e.nodeName)?.privateIP;
      if (!address) {
        dropped.push({ source: gw.metadata.name, kind: 'node-ip', reason: `active proxy endpoint ${e.nodeName} has no privateIP in status.nodes; left out of ${PROXY_SERVICE_NAME}` });
        continue;
      }
      const other = byAddress.get(address);
      if (other === undefined || e.nodeName < other) byAddress.set(address, e.nodeName);
    }
  }
  if (!byAddress.size) return { slices: [], none: 'no exposed region has an active proxy endpoint', dropped };

  const families = new Map<AddressType, SliceEndpoint[]>();
  for (const [address, nodeName] of byAddress) {
    const family = addressType(address);
    families.set(family, [...(families.get(family) ?? []), { addresses: [address], nodeName, conditions: { ready: true } }]);
  }
  const slices = [...families.entries()]
    .map(([family, endpoints]): EndpointSliceLike => ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: proxySliceName(family),
        namespace: input.namespace,
        labels: { [SLICE_SERVICE_LABEL]: PROXY_SERVICE_NAME, [SLICE_MANAGED_BY_LABEL]: SLICE_MANAGER },
      },
      addressType: family,
      endpoints: endpoints.sort((a, b) => (a.nodeName < b.nodeName ? -1 : a.nodeName > b.nodeName ? 1 : a.addresses[0]! < b.addresses[0]! ? -1 : 1)),
      ports,
    }))
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
  return { slices, dropped };
}

/** The parts of a slice we own, from whatever the API returned: what "differs" is judged on. */
export function ownedSliceFields(s: unknown): { labels: Record<string, string>; addressType: unknown; endpoints: unknown[]; ports: unknown[] } {
  const o = (s ?? {}) as { metadata?: { labels?: Record<string, string> }; addressType?: unknown; endpoints?: unknown; ports?: unknown };
  const labels = o.metadata?.labels ?? {};
  const endpoints = Array.isArray(o.endpoints) ? o.endpoints : [];
  const ports = Array.isArray(o.ports) ? o.ports : [];
  return {
    labels: { [SLICE_SERVICE_LABEL]: labels[SLICE_SERVICE_LABEL] ?? '', [SLICE_MANAGED_BY_LABEL]: labels[SLICE_MANAGED_BY_LABEL] ?? '' },
    addressType: o.addressType,
    endpoints: endpoints.map((e: { addresses?: unknown; nodeName?: unknown; conditions?: { ready?: unknown } }) => ({
      addresses: e?.addresses,
      nodeName: e?.nodeName,
      conditions: { ready: e?.conditions?.ready },
    })),
    ports: ports.map((p: { name?: unknown; protocol?: unknown; port?: unknown }) => ({ name: p?.name ?? '', protocol: p?.protocol ?? 'TCP', port: p?.port })),
  };
}
