/**
 * The typed topology model: what the compiler renders and the runtime (controller, agent) reasons about.
 * Produced by `normalize()` from a schema-valid document; every default is applied here, once.
 * Collections are sorted where order carries no meaning, so renderers stay deterministic.
 */
import type { PathSegment } from './diagnostics.js';

export type Backend = 'wireguard' | 'ipsec';
export type Exposure = 'none' | 'PublicIP' | 'LoadBalancer';
export type EndpointType = 'tunnel' | 'proxy';
export type RegionType = 'cloud' | 'edge';

/** Where a model element came from in the topology file, for diagnostics. */
export interface Located {
  readonly path: readonly PathSegment[];
}

export interface Endpoint extends Located {
  readonly node: string;
  readonly type: EndpointType;
  readonly port: number;
  readonly publicIP?: string;
}

export interface Region extends Located {
  readonly name: string;
  /** `gw-<name>`. */
  readonly gatewayName: string;
  readonly type: RegionType;
  /** Label selector for members; undefined when membership is by `nodes` only. */
  readonly nodeSelector?: Readonly<Record<string, string>>;
  /** Members named explicitly, as written (renderers sort). */
  readonly nodes: readonly string[];
  /** As written (renderers sort). */
  readonly podCIDRs: readonly string[];
  readonly underNAT: boolean;
  readonly exposure: Exposure;
  /** Candidates in priority (spec) order; an endpoint without a type is expanded to tunnel then proxy. */
  readonly endpoints: readonly Endpoint[];
  readonly replicas: { readonly tunnel: number; readonly proxy: number };
  readonly proxyPorts: { readonly http: readonly number[]; readonly https: readonly number[] };
}

export interface SecretKeyRef {
  readonly name: string;
  readonly key: string;
}

export interface ArgoCdTarget {
  readonly namespace: string;
  readonly project: string;
  readonly server: string;
}

export interface FluxTarget {
  readonly namespace: string;
  readonly interval: string;
  readonly secretRef?: string;
}

export interface GitOps {
  readonly repoURL: string;
  readonly revision: string;
  readonly path: string;
  readonly argocd?: ArgoCdTarget;
  readonly flux?: FluxTarget;
}

export interface Vpn {
  readonly backend: Backend;
  readonly port: number;
  readonly psk?: SecretKeyRef;
  readonly natTraversal: boolean;
  /** Effective tunnel MTU: the override, or underlayMTU minus the backend overhead. */
  readonly mtu: number;
  readonly mtuOverride?: number;
  readonly underlayMTU: number;
}

export interface Topology {
  /** The file it was read from, as given (for headers and messages). */
  readonly source: string;
  readonly cluster: string;
  readonly namespace: string;
  readonly images: { readonly agent: string; readonly controller: string };
  readonly gitops: GitOps;
  readonly vpn: Vpn;
  readonly l3Tunnel: boolean;
  readonly l7Proxy: boolean;
  readonly forwardNodeIP: boolean;
  readonly serviceCIDRs: readonly string[];
  /** Sorted by name. */
  readonly regions: readonly Region[];
}

export function gatewayName(region: string): string {
  return `gw-${region}`;
}

export function endpointsOfType(region: Region, type: EndpointType): Endpoint[] {
  return region.endpoints.filter((e) => e.type === type);
}
