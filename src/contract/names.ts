/**
 * Names, ports and limits shared by the compiler, the controller and the agent.
 * Values marked "Raven" keep OpenYurt compatibility; change them only together with OpenYurt.
 */
import { createHash } from 'node:crypto';
import { VERSION } from '../platform/version.js';

export const GATEWAY_GROUP = 'raven.openyurt.io';
export const GATEWAY_VERSION = 'v1beta1';
export const GATEWAY_API_VERSION = `${GATEWAY_GROUP}/${GATEWAY_VERSION}`;

/** Raven: node label naming the node's Gateway. */
export const GATEWAY_LABEL = 'raven.openyurt.io/gateway';
/** OpenYurt node-pool label; the default way nodes join a region. */
export const NODEPOOL_LABEL = 'apps.openyurt.io/nodepool';
/** Our annotation on a Gateway listing member nodes named explicitly in the topology (comma-separated). */
export const MEMBER_NODES_ANNOTATION = 'raven-gitops.io/member-nodes';
/** Our annotation on a Gateway carrying the region's known pod CIDRs (comma-separated, sorted). */
export const POD_CIDRS_ANNOTATION = 'raven-gitops.io/pod-cidrs';
export const REGION_LABEL = 'raven-gitops.io/region';
export const REGION_TYPE_LABEL = 'raven-gitops.io/region-type';

/** Raven: default port of a proxy endpoint (the cloud proxy server's external port). */
export const DEFAULT_PROXY_PORT = 10262;
/** Raven: agent proxy server's internal HTTPS / HTTP listen ports. */
export const PROXY_INTERNAL_SECURE_PORT = 10263;
export const PROXY_INTERNAL_INSECURE_PORT = 10264;
/**
 * V8 limits for the agent's Node processes (the agent and the L7 proxy it starts, which inherits
 * them): NODE_OPTIONS in the agent DaemonSet, and for the agents `raven lab` starts. A 1 MiB semi-space
 * keeps the young generation small, and a 128 MiB old space makes V8 grow the heap in small steps.
 * Measured by `npm run bench:soak` (README, Memory soak): without them the active cloud gateway's
 * V8 heap total grew to 67.7 MiB for a heap used of 27–45 MiB, 119.7 MiB RSS; with them 37.7 MiB
 * and 91.9 MiB. The heap used peaked at 46.6 MiB, well inside 128.
 */
export const AGENT_NODE_OPTIONS = '--max-semi-space-size=1 --max-old-space-size=128';
/** Agent health (/healthz, /readyz) and Prometheus metrics, on the node's network (hostNetwork). */
export const AGENT_HEALTH_PORT = 10275;
export const AGENT_METRICS_PORT = 10265;
/** Raven: the L7 proxy's metrics (proxy-metric-bind-addr). */
export const PROXY_METRICS_PORT = 10266;
/** Controller health and metrics, in the pod network. */
export const CONTROLLER_HTTP_PORT = 10276;

/** TCP ports the agent itself listens on every node; endpoints must not reuse them. */
export const AGENT_RESERVED_TCP_PORTS: ReadonlyMap<number, string> = new Map([
  [AGENT_METRICS_PORT, 'agent metrics'],
  [PROXY_INTERNAL_SECURE_PORT, 'proxy server HTTPS'],
  [PROXY_INTERNAL_INSECURE_PORT, 'proxy server HTTP'],
  [AGENT_HEALTH_PORT, 'agent health'],
  [PROXY_METRICS_PORT, 'proxy metrics'],
]);

/**
 * The Secret holding one region's L7 proxy certificates, mounted only by that region's gateway
 * candidates at PROXY_CERT_DIR: ca.crt, server.crt/key (regions with exposed proxy endpoints),
 * client.crt/key (edge regions, CN gw-<region>), client-ca.crt. Referenced, never generated.
 */
export function proxySecretName(region: string): string {
  return `raven-proxy-${region}`;
}
export const PROXY_CERT_DIR = '/etc/raven/proxy';
/** Where gateway candidates mount the IPsec PSK Secret: one file, `psk`. Nothing else holds it. */
export const IPSEC_SECRET_DIR = '/etc/raven/ipsec';
export const PSK_FILE_NAME = 'psk';
export const PSK_FILE = `${IPSEC_SECRET_DIR}/${PSK_FILE_NAME}`;
/** Names of the agent DaemonSets' Secret volumes (the lab finds them by these names). */
export const PSK_VOLUME = 'ipsec-psk';
export const PROXY_CERTS_VOLUME = 'proxy-certs';

/** One active tunnel endpoint per Gateway: OpenYurt's validating webhook rejects more. */
export const MAX_TUNNEL_REPLICAS = 1;

/**
 * Worst-case per-packet overhead of each backend, in bytes, with an IPv6 outer header so one
 * number is safe for every underlay family.
 * - WireGuard: IPv6 40 + UDP 8 + WireGuard header 16 + Poly1305 tag 16 = 80.
 * - IPsec ESP in UDP (NAT-T, always on here): IPv6 40 + UDP 8 + ESP 8 + IV 8 + pad ≤3 + trailer 2 + ICV 16
 *   = 85 with AES-GCM; rounded up to 88 for 8-byte alignment.
 */
export const BACKEND_OVERHEAD: Readonly<Record<'wireguard' | 'ipsec', number>> = { wireguard: 80, ipsec: 88 };

/**
 * The largest tunnel MTU each backend carries. IPsec: strongSwan's userspace ESP (kernel-libipsec)
 * creates its TUN with 1400 and reads at most that many bytes per packet, so a larger MTU would drop
 * every full-sized packet. WireGuard: the agent's upper bound for `tunnel-mtu`. Validation rejects an
 * explicit `vpn.mtu` above it, the derived MTU never exceeds it, and every agent caps at it too, so
 * members agree with their gateway.
 */
export const BACKEND_MAX_MTU: Readonly<Record<'wireguard' | 'ipsec', number>> = { wireguard: 9000, ipsec: 1400 };
export const IPSEC_MAX_MTU = BACKEND_MAX_MTU.ipsec;

/** The smallest MTU an IPv6 link may have (RFC 8200). */
export const IPV6_MIN_MTU = 1280;

/** The image of the controller and the agent when a topology names none: this release's tag. */
export const DEFAULT_IMAGE = `ghcr.io/raven-gitops/raven:${VERSION}`;

/** wireguard-go's UAPI sockets (`<dir>/<device>.sock`): global per host, so a hostPath in the agent pod. */
export const WIREGUARD_RUN_DIR = '/var/run/wireguard';

// Objects the controller owns beside Gateways: LoadBalancer exposure and the L7 proxy's entry.
export const EXPOSURE_GATEWAY_LABEL = 'raven-gitops.io/gateway';
export const EXPOSURE_TYPE_LABEL = 'raven.openyurt.io/gateway-type';
export const EXPOSURE_NODE_LABEL = 'raven.openyurt.io/endpoints-name';
/** The label tying an EndpointSlice to its Service (kube-proxy reads it). */
export const SLICE_SERVICE_LABEL = 'kubernetes.io/service-name';


/**
 * `raven-<type>-<gateway>-<node>`, the same for as long as that endpoint is active. Names over 63
 * characters keep a readable prefix and end in a hash of the full name, so they stay unique.
 */
export function exposureName(gateway: string, e: { readonly type: string; readonly nodeName: string }): string {
  const full = `raven-${e.type}-${gateway.replace(/^gw-/, '')}-${e.nodeName}`.toLowerCase().replace(/[^a-z0-9-]/g, '-');
  if (full.length <= 63) return full;
  const hash = createHash('sha256').update(full).digest('hex').slice(0, 8);
  return `${full.slice(0, 54).replace(/-+$/, '')}-${hash}`;
}

/** Raven's name, so OpenYurt's raven-proxy-dns setup keeps working unchanged. */
export const PROXY_SERVICE_NAME = 'x-raven-proxy-internal-svc';
export const SLICE_MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
/** Our value of `endpointslice.kubernetes.io/managed-by` (Kubernetes' own is `endpointslice-controller.k8s.io`). */
export const SLICE_MANAGER = 'raven-controller.raven-gitops.io';
