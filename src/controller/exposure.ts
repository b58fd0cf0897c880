/**
 * LoadBalancer exposure: one Service per active endpoint of a Gateway with exposeType
 * LoadBalancer, with a stable name, pointing (through a selector-less EndpointSlice) at the
 * endpoint node's address; the endpoint's publicIP is whatever the cloud puts in the Service's
 * ingress. Pure: the controller applies the difference.
 */
import { canonicalIP, type Dropped, shown } from '../platform/canonical.js';
import type { Gateway, GatewayEndpoint, GatewayNodeInfo } from '../contract/gateway.js';
import { EXPOSURE_GATEWAY_LABEL, EXPOSURE_NODE_LABEL, EXPOSURE_TYPE_LABEL, exposureName, SLICE_SERVICE_LABEL } from '../contract/names.js';

/** An EndpointSlice's `addressType` for a canonical address. */
export function addressType(address: string): 'IPv4' | 'IPv6' {
  return address.includes(':') ? 'IPv6' : 'IPv4';
}

export interface ServiceLike {
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string>; resourceVersion?: string };
  spec?: Record<string, unknown>;
  status?: { loadBalancer?: { ingress?: { ip?: string; hostname?: string }[] } };
}

export interface Exposed {
  readonly service: ServiceLike;
  readonly slice: Record<string, unknown>;
}

export function desiredExposure(gw: Gateway, active: readonly GatewayEndpoint[], nodes: readonly GatewayNodeInfo[], namespace: string): Exposed[] {
  if (gw.spec?.exposeType !== 'LoadBalancer') return [];
  const out: Exposed[] = [];
  for (const e of active) {
    const address = nodes.find((n) => n.nodeName === e.nodeName)?.privateIP;
    if (!address || !e.port) continue;
    const name = exposureName(gw.metadata.name, e);
    const protocol = e.type === 'tunnel' ? 'UDP' : 'TCP';
    const labels = { [EXPOSURE_GATEWAY_LABEL]: gw.metadata.name, [EXPOSURE_TYPE_LABEL]: e.type, [EXPOSURE_NODE_LABEL]: e.nodeName };
    out.push({
      service: {
        metadata: { name, namespace, labels, annotations: { 'svc.openyurt.io/discard': 'true' } },
        spec: { type: 'LoadBalancer', externalTrafficPolicy: 'Local', ports: [{ name: e.type, protocol, port: e.port, targetPort: e.port }] },
      },
      slice: {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name, namespace, labels: { ...labels, [SLICE_SERVICE_LABEL]: name } },
        addressType: addressType(address),
        endpoints: [{ addresses: [address], nodeName: e.nodeName, conditions: { ready: true } }],
        ports: [{ name: e.type, protocol, port: e.port }],
      },
    });
  }
  return out.sort((a, b) => (a.service.metadata.name < b.service.metadata.name ? -1 : 1));
}

/**
 * The address the cloud assigned, if any yet: the first ingress `ip` that parses. Tunnels are
 * dialled at an address, so an ingress that is only a hostname (AWS load balancers) gives none,
 * and says so in `refused`, rather than putting a name where every peer expects an address.
 */
export function ingressAddress(svc: ServiceLike | undefined): { ip?: string; refused?: string } {
  const ingress = svc?.status?.loadBalancer?.ingress ?? [];
  const problems: string[] = [];
  for (const ing of Array.isArray(ingress) ? ingress : []) {
    if (ing?.ip !== undefined) {
      const ip = canonicalIP(ing.ip);
      if (ip.ok) return { ip: ip.value };
      problems.push(`ingress ip ${ip.reason}`);
    } else if (ing?.hostname !== undefined) problems.push(`ingress is the hostname ${shown(ing.hostname)}, not an address (tunnels are dialled at an IP; use a load balancer with a static IP)`);
  }
  return problems.length ? { refused: `Service ${svc!.metadata.name}: ${problems.join('; ')}` } : {};
}

/** Active endpoints with publicIP taken from their LoadBalancer Service (PublicIP gateways keep the spec's). */
export function withPublicAddresses(gw: Gateway, active: readonly GatewayEndpoint[], services: ReadonlyMap<string, ServiceLike>, dropped: Dropped[] = []): GatewayEndpoint[] {
  if (gw.spec?.exposeType !== 'LoadBalancer') return [...active];
  return active.map((e) => {
    const { publicIP: _ignored, ...rest } = e;
    const { ip, refused } = ingressAddress(services.get(exposureName(gw.metadata.name, e)));
    if (refused) dropped.push({ source: gw.metadata.name, kind: 'public-ip', reason: refused });
    return ip ? { ...rest, publicIP: ip } : rest;
  });
}
