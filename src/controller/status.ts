/**
 * Gateway status from the election and the member nodes. Pure.
 *
 * `nodes` lists every member (Ready or not), sorted, with privateIP = first InternalIP and subnets =
 * spec.podCIDRs (all families), else spec.podCIDR, else the node's confirmed Calico blocks when its
 * IPAM is Calico's. Raven's `extra-allowed-source-cidrs` annotation adds ranges to the active
 * tunnel node.
 *
 * Every one of those values is written by a node or a user, not checked by the API server, and
 * ends up in routes on every other node. Each is parsed into canonical form here, one at a time
 * (`canonicalIP`, `canonicalSubnet`): a bad one is left out of status and reported in `dropped`,
 * and its neighbours are kept.
 */
import { canonicalIP, canonicalSubnet, type Dropped } from '../platform/canonical.js';
import type { Gateway, GatewayEndpoint, GatewayNodeInfo, NodeLike } from '../contract/gateway.js';

export const EXTRA_SOURCE_CIDRS_ANNOTATION = 'raven.openyurt.io/extra-allowed-source-cidrs';

/** The parts of a Calico BlockAffinity (crd.projectcalico.org/v1) we read. */
export interface BlockAffinityLike {
  spec?: { node?: string; cidr?: string; state?: string };
}

export interface GatewayStatus {
  activeEndpoints: GatewayEndpoint[];
  nodes: GatewayNodeInfo[];
}

export interface NodeInfoResult {
  readonly info: GatewayNodeInfo;
  readonly dropped: readonly Dropped[];
}

/** The node's first InternalIP that parses, and its pod ranges that may be routed. */
export function parseNodeInfo(node: NodeLike, calicoBlocks: readonly BlockAffinityLike[] = []): NodeInfoResult {
  const source = `node/${node.metadata.name}`;
  const dropped: Dropped[] = [];
  let privateIP = '';
  for (const a of node.status?.addresses ?? []) {
    if (a?.type !== 'InternalIP') continue;
    const ip = canonicalIP(a.address);
    if (ip.ok) {
      privateIP = ip.value;
      break;
    }
    dropped.push({ source, kind: 'node-ip', reason: `InternalIP ${ip.reason}` });
  }
  let raw: readonly unknown[] = (node.spec?.podCIDRs ?? []).filter(Boolean);
  let from = 'spec.podCIDRs';
  if (raw.length === 0 && node.spec?.podCIDR) [raw, from] = [[node.spec.podCIDR], 'spec.podCIDR'];
  if (raw.length === 0 && usesCalico(node)) {
    raw = calicoBlocks.filter((b) => b?.spec?.node === node.metadata.name && b.spec.state === 'confirmed' && b.spec.cidr).map((b) => b.spec!.cidr!);
    from = 'Calico BlockAffinity';
  }
  const subnets = new Set<string>();
  for (const s of raw) {
    const p = canonicalSubnet(s);
    if (p.ok) subnets.add(p.value);
    else dropped.push({ source, kind: 'subnet', reason: `${from}: ${p.reason}` });
  }
  return { info: { nodeName: node.metadata.name, privateIP, subnets: [...subnets].sort() }, dropped };
}

export function nodeInfo(node: NodeLike, calicoBlocks: readonly BlockAffinityLike[] = []): GatewayNodeInfo {
  return parseNodeInfo(node, calicoBlocks).info;
}

function usesCalico(node: NodeLike): boolean {
  return Object.keys(node.metadata.annotations ?? {}).some((k) => k.includes('projectcalico.org'));
}

/** `extra-allowed-source-cidrs`: comma-separated ranges, each parsed on its own. */
export function extraSourceCidrs(gw: Gateway): { cidrs: string[]; dropped: Dropped[] } {
  const raw = gw.metadata.annotations?.[EXTRA_SOURCE_CIDRS_ANNOTATION];
  const cidrs = new Set<string>();
  const dropped: Dropped[] = [];
  for (const s of (typeof raw === 'string' ? raw : '').split(',').map((x) => x.trim()).filter(Boolean)) {
    const p = canonicalSubnet(s);
    if (p.ok) cidrs.add(p.value);
    else dropped.push({ source: gw.metadata.name, kind: 'subnet', reason: `${EXTRA_SOURCE_CIDRS_ANNOTATION}: ${p.reason}` });
  }
  return { cidrs: [...cidrs].sort(), dropped };
}

export function gatewayStatusWithDrops(gw: Gateway, members: readonly NodeLike[], active: readonly GatewayEndpoint[], calicoBlocks: readonly BlockAffinityLike[] = []): { status: GatewayStatus; dropped: Dropped[] } {
  const tunnelNode = active.find((e) => e.type === 'tunnel')?.nodeName;
  const extra = extraSourceCidrs(gw);
  const dropped: Dropped[] = [...extra.dropped];
  const nodes = [...members]
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1))
    .map((n) => {
      const r = parseNodeInfo(n, calicoBlocks);
      dropped.push(...r.dropped);
      return n.metadata.name === tunnelNode && extra.cidrs.length ? { ...r.info, subnets: [...new Set([...r.info.subnets, ...extra.cidrs])].sort() } : r.info;
    });
  return { status: { activeEndpoints: [...active], nodes }, dropped };
}

export function gatewayStatus(gw: Gateway, members: readonly NodeLike[], active: readonly GatewayEndpoint[], calicoBlocks: readonly BlockAffinityLike[] = []): GatewayStatus {
  return gatewayStatusWithDrops(gw, members, active, calicoBlocks).status;
}
