/**
 * Schema-valid document → typed model, with every default applied. Pure; never fails on
 * schema-valid input (semantic problems are found afterwards by `check()`).
 */
import {
  BACKEND_MAX_MTU,
  BACKEND_OVERHEAD,
  DEFAULT_IMAGE,
  DEFAULT_PROXY_PORT,
  NODEPOOL_LABEL,
} from '../contract/names.js';
import type { Endpoint, EndpointType, Region, Topology } from './model.js';
import { gatewayName } from './model.js';

/** The shape the schema guarantees (optional fields may be absent). */
export interface RawTopology {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: {
    namespace?: string;
    images?: { agent?: string; controller?: string };
    gitops: {
      repoURL: string;
      revision?: string;
      path?: string;
      argocd?: { namespace?: string; project?: string; server?: string };
      flux?: { namespace?: string; interval?: string; secretRef?: string };
    };
    vpn?: {
      backend?: 'wireguard' | 'ipsec';
      port?: number;
      psk?: { secretRef: { name: string; key: string } };
      natTraversal?: boolean;
      mtu?: number;
      underlayMTU?: number;
    };
    l3Tunnel?: boolean;
    l7Proxy?: boolean;
    forwardNodeIP?: boolean;
    serviceCIDRs?: string[];
    regions: RawRegion[];
  };
}

export interface RawRegion {
  name: string;
  type?: 'cloud' | 'edge';
  nodeSelector?: Record<string, string>;
  nodes?: string[];
  podCIDRs?: string[];
  underNAT?: boolean;
  exposure?: 'none' | 'PublicIP' | 'LoadBalancer';
  endpoints?: { node: string; type?: EndpointType; port?: number; publicIP?: string }[];
  replicas?: { tunnel?: number; proxy?: number };
  proxyPorts?: { http?: number[]; https?: number[] };
}

export function normalize(source: string, raw: RawTopology): Topology {
  const spec = raw.spec;
  const cluster = raw.metadata.name;
  const vpnPort = spec.vpn?.port ?? 4500;
  const backend = spec.vpn?.backend ?? 'wireguard';
  const underlayMTU = spec.vpn?.underlayMTU ?? 1500;
  const mtuOverride = spec.vpn?.mtu;
  const argocd = spec.gitops.argocd;
  const flux = spec.gitops.flux;

  const regions = spec.regions
    .map((r, i) => normalizeRegion(r, ['spec', 'regions', i], vpnPort))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  return {
    source,
    cluster,
    namespace: spec.namespace ?? 'raven-system',
    images: {
      agent: spec.images?.agent ?? DEFAULT_IMAGE,
      controller: spec.images?.controller ?? DEFAULT_IMAGE,
    },
    gitops: {
      repoURL: spec.gitops.repoURL,
      revision: spec.gitops.revision ?? 'main',
      path: (spec.gitops.path ?? `dist/${cluster}`).replace(/\/+$/, ''),
      ...(argocd && {
        argocd: {
          namespace: argocd.namespace ?? 'argocd',
          project: argocd.project ?? 'default',
          server: argocd.server ?? 'https://kubernetes.default.svc',
        },
      }),
      ...(flux && {
        flux: {
          namespace: flux.namespace ?? 'flux-system',
          interval: flux.interval ?? '10m',
          ...(flux.secretRef && { secretRef: flux.secretRef }),
        },
      }),
    },
    vpn: {
      backend,
      port: vpnPort,
      ...(spec.vpn?.psk && { psk: { name: spec.vpn.psk.secretRef.name, key: spec.vpn.psk.secretRef.key } }),
      natTraversal: spec.vpn?.natTraversal ?? false,
      // Derived: what the underlay leaves after the backend's overhead, within what the backend carries.
      mtu: mtuOverride ?? Math.min(underlayMTU - BACKEND_OVERHEAD[backend], BACKEND_MAX_MTU[backend]),
      ...(mtuOverride !== undefined && { mtuOverride }),
      underlayMTU,
    },
    l3Tunnel: spec.l3Tunnel ?? true,
    l7Proxy: spec.l7Proxy ?? false,
    forwardNodeIP: spec.forwardNodeIP ?? false,
    serviceCIDRs: spec.serviceCIDRs ?? [],
    regions,
  };
}

function normalizeRegion(r: RawRegion, path: (string | number)[], vpnPort: number): Region {
  const endpoints: Endpoint[] = [];
  (r.endpoints ?? []).forEach((e, i) => {
    const types: EndpointType[] = e.type ? [e.type] : ['tunnel', 'proxy'];
    for (const type of types) {
      endpoints.push({
        path: [...path, 'endpoints', i],
        node: e.node,
        type,
        port: e.port ?? (type === 'tunnel' ? vpnPort : DEFAULT_PROXY_PORT),
        ...(e.publicIP !== undefined && { publicIP: e.publicIP }),
      });
    }
  });
  const nodes = r.nodes ?? [];
  const nodeSelector = r.nodeSelector ?? (nodes.length === 0 ? { [NODEPOOL_LABEL]: r.name } : undefined);
  return {
    path,
    name: r.name,
    gatewayName: gatewayName(r.name),
    type: r.type ?? 'edge',
    ...(nodeSelector && { nodeSelector }),
    nodes,
    podCIDRs: r.podCIDRs ?? [],
    underNAT: r.underNAT ?? false,
    exposure: r.exposure ?? 'none',
    endpoints,
    replicas: { tunnel: r.replicas?.tunnel ?? 1, proxy: r.replicas?.proxy ?? 1 },
    proxyPorts: {
      http: [...(r.proxyPorts?.http ?? [])].sort((a, b) => a - b),
      https: [...(r.proxyPorts?.https ?? [])].sort((a, b) => a - b),
    },
  };
}
