/**
 * The Gateway object (`raven.openyurt.io/v1beta1`) as the runtime reads and writes it, plus the
 * few parts of a Node it needs. Plain interfaces (no client library types), so the pure core
 * (membership, election, status) is testable without a cluster.
 */
import type { EndpointType } from '../topology/model.js';

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
