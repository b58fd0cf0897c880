/**
 * Gateway status from the election and the member nodes. Pure.
 *
 * `nodes` lists every member (Ready or not), sorted, with privateIP = first InternalIP and subnets =
 * spec.podCIDRs (all families), else spec.podCIDR, else the node's confirmed Calico blocks when its
 * IPAM is Calico's. Raven's `extra-allowed-source-cidrs` annotation adds ranges to the active
 * tunnel node.
 */
import type { Gateway, GatewayEndpoint, GatewayNodeInfo, NodeLike } from '../gateway.js';

export const EXTRA_SOURCE_CIDRS_ANNOTATION = 'raven.openyurt.io/extra-allowed-source-cidrs';

/** The parts of a Calico BlockAffinity (crd.projectcalico.org/v1) we read. */
export interface BlockAffinityLike {
  spec?: { node?: string; cidr?: string; state?: string };
}

export interface GatewayStatus {
  activeEndpoints: GatewayEndpoint[];
  nodes: GatewayNodeInfo[];
}

export function nodeInfo(node: NodeLike, calicoBlocks: readonly BlockAffinityLike[] = []): GatewayNodeInfo {
  const privateIP = node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address ?? '';
  let subnets = (node.spec?.podCIDRs ?? []).filter(Boolean);
  if (subnets.length === 0 && node.spec?.podCIDR) subnets = [node.spec.podCIDR];
  if (subnets.length === 0 && usesCalico(node)) {
    subnets = calicoBlocks
      .filter((b) => b.spec?.node === node.metadata.name && b.spec?.state === 'confirmed' && b.spec.cidr)
      .map((b) => b.spec!.cidr!)
      .sort();
  }
  return { nodeName: node.metadata.name, privateIP, subnets };
}

function usesCalico(node: NodeLike): boolean {
  return Object.keys(node.metadata.annotations ?? {}).some((k) => k.includes('projectcalico.org'));
}

export function gatewayStatus(gw: Gateway, members: readonly NodeLike[], active: readonly GatewayEndpoint[], calicoBlocks: readonly BlockAffinityLike[] = []): GatewayStatus {
  const tunnelNode = active.find((e) => e.type === 'tunnel')?.nodeName;
  const extra = (gw.metadata.annotations?.[EXTRA_SOURCE_CIDRS_ANNOTATION] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const nodes = [...members]
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1))
    .map((n) => {
      const info = nodeInfo(n, calicoBlocks);
      return n.metadata.name === tunnelNode && extra.length ? { ...info, subnets: [...new Set([...info.subnets, ...extra])] } : info;
    });
  return { activeEndpoints: [...active], nodes };
}
