/**
 * The agent's plan: from the Gateways (spec and status) and this node's name, the network state
 * this node should have. Pure; executors apply it.
 *
 * Routing design: no vxlan device and no packet marks. One policy rule sends lookups to a table of
 * our own that holds only remote-region destinations; everything else falls through to the main
 * table, so the cluster's CNI keeps all same-region traffic (including the return path into the
 * region on the gateway). Without iptables marks there is nothing to clash with Calico's mangle
 * rules (Raven issue #136).
 */
import { BACKEND_OVERHEAD } from '../../topology/constants.js';
import type { Gateway, GatewayEndpoint } from '../gateway.js';

export type Role = 'gateway' | 'standby' | 'member' | 'outside';

export interface RoutePlan {
  /** Destination CIDR in a remote region. */
  readonly dst: string;
  /** Next hop: the region's active gateway (members); absent on the gateway, which routes into its tunnel device. */
  readonly via?: string;
  /** The tunnel device (gateway only). */
  readonly dev?: string;
  readonly mtu: number;
}

export interface PeerPlan {
  /** The remote Gateway this peer stands for. */
  readonly gateway: string;
  readonly node: string;
  readonly publicKey?: string;
  /** `host:port` to dial; absent when the peer dials us (it is behind NAT, we are reachable). */
  readonly endpoint?: string;
  /** Destinations sent to this peer: its region, plus regions it relays for us. */
  readonly allowedIPs: readonly string[];
  /** Seconds; set when we are behind NAT, to keep the mapping open. */
  readonly keepaliveSeconds?: number;
  /** How we reach this peer itself. */
  readonly path: 'direct' | 'edge-to-edge';
  /** Regions whose traffic this peer relays for us (they cannot be reached otherwise). */
  readonly relaysFor: readonly string[];
  /** For edge-to-edge pairs: one side waits before initiating (simultaneous initiations deadlock). */
  readonly initiateDelayMs?: number;
}

export interface NodePlan {
  readonly role: Role;
  readonly gateway?: string;
  /** The region's active tunnel node, when there is one. */
  readonly activeNode?: string;
  readonly routes: readonly RoutePlan[];
  readonly peers: readonly PeerPlan[];
  readonly mtu: number;
}

export interface PlanOptions {
  readonly node: string;
  readonly backend: 'wireguard' | 'ipsec';
  /** Tunnel device name on gateways. */
  readonly device: string;
  readonly natTraversal: boolean;
  readonly forwardNodeIP: boolean;
  /** Tunnel MTU from config; 0 means underlay MTU minus the backend overhead. */
  readonly mtu: number;
  readonly underlayMTU: number;
}

export const KEEPALIVE_SECONDS = 5;
export const EDGE_STAGGER_MS = 200;
/** NAT types between which hole punching cannot work (Raven's rule, from STUN classification). */
const HOSTILE_NAT_PAIRS = new Set(['Symmetric NAT|Symmetric NAT', 'Symmetric NAT|Port Restricted cone NAT', 'Port Restricted cone NAT|Symmetric NAT']);

interface Region {
  readonly name: string;
  readonly gw: Gateway;
  readonly active?: GatewayEndpoint;
  readonly subnets: readonly string[];
  readonly reachable: boolean;
}

const byName = (a: { name: string }, b: { name: string }): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

export function plan(gateways: readonly Gateway[], opts: PlanOptions): NodePlan {
  const mtu = opts.mtu > 0 ? opts.mtu : opts.underlayMTU - BACKEND_OVERHEAD[opts.backend];
  const regions: Region[] = gateways.map((gw) => region(gw, opts.forwardNodeIP)).sort(byName);
  const mine = regions.find((r) => r.gw.status?.nodes?.some((n) => n.nodeName === opts.node));
  if (!mine) return { role: 'outside', routes: [], peers: [], mtu };

  const remotes = regions.filter((r) => r !== mine && r.active && r.subnets.length > 0);
  const activeNode = mine.active?.nodeName;
  if (!activeNode) return { role: isCandidate(mine.gw, opts.node) ? 'standby' : 'member', gateway: mine.name, routes: [], peers: [], mtu };

  if (activeNode !== opts.node) {
    const via = mine.gw.status?.nodes?.find((n) => n.nodeName === activeNode)?.privateIP;
    const routes = via ? remotes.flatMap((r) => r.subnets.map((dst) => ({ dst, via, mtu }))) : [];
    return { role: isCandidate(mine.gw, opts.node) ? 'standby' : 'member', gateway: mine.name, activeNode, routes: sortRoutes(routes), peers: [], mtu };
  }

  const routes = remotes.flatMap((r) => r.subnets.map((dst) => ({ dst, dev: opts.device, mtu })));
  return { role: 'gateway', gateway: mine.name, activeNode, routes: sortRoutes(routes), peers: peers(mine, remotes, regions, opts), mtu };
}

function region(gw: Gateway, forwardNodeIP: boolean): Region {
  const active = gw.status?.activeEndpoints?.find((e) => e.type === 'tunnel');
  const subnets = new Set<string>();
  for (const n of gw.status?.nodes ?? []) {
    for (const s of n.subnets) subnets.add(s);
    if (forwardNodeIP && n.privateIP) subnets.add(n.privateIP.includes(':') ? `${n.privateIP}/128` : `${n.privateIP}/32`);
  }
  const exposed = gw.spec?.exposeType === 'PublicIP' || gw.spec?.exposeType === 'LoadBalancer';
  return { name: gw.metadata.name, gw, ...(active && { active }), subnets: [...subnets].sort(), reachable: exposed && !active?.underNAT && !!active?.publicIP };
}

function isCandidate(gw: Gateway, node: string): boolean {
  return (gw.spec?.endpoints ?? []).some((e) => e.nodeName === node && e.type === 'tunnel');
}

/**
 * One peer per remote region. Direct when either side can be dialed; edge-to-edge when both are
 * behind NAT, NAT traversal is on and their NAT types allow it; otherwise through a relay: the
 * first reachable region (by name) that is neither side carries the unreachable region's traffic.
 */
function peers(mine: Region, remotes: readonly Region[], all: readonly Region[], opts: PlanOptions): PeerPlan[] {
  const out = new Map<string, { peer: PeerPlan; allowed: Set<string>; relays: Set<string> }>();
  const add = (r: Region, path: PeerPlan['path'], relayed?: Region, initiateDelayMs?: number, endpoint?: string): void => {
    let entry = out.get(r.name);
    if (!entry) {
      const a = r.active!;
      entry = {
      allowed: new Set(r.subnets),
      relays: new Set(),
      peer: {
        gateway: r.name,
        node: a.nodeName,
        ...(a.config?.publicKey && { publicKey: a.config.publicKey }),
        ...(endpoint && { endpoint }),
        allowedIPs: [],
        ...(!mine.reachable && { keepaliveSeconds: KEEPALIVE_SECONDS }),
        path,
        relaysFor: [],
        ...(initiateDelayMs !== undefined && { initiateDelayMs }),
      },
      };
      out.set(r.name, entry);
    }
    if (relayed) {
      entry.relays.add(relayed.name);
      for (const s of relayed.subnets) entry.allowed.add(s);
    }
  };
  const dial = (r: Region): string | undefined => (r.reachable ? `${host(r.active!.publicIP!)}:${r.active!.port ?? 4500}` : undefined);

  for (const r of remotes) {
    if (r.reachable || mine.reachable) {
      add(r, 'direct', undefined, undefined, dial(r));
      continue;
    }
    if (opts.natTraversal && canPunch(mine.active!, r.active!)) {
      // The lexicographically later gateway waits: both sides agree without talking.
      add(r, 'edge-to-edge', undefined, mine.name > r.name ? EDGE_STAGGER_MS : 0, `${host(r.active!.publicIP!)}:${r.active!.publicPort}`);
      continue;
    }
    const relay = all.find((x) => x !== mine && x !== r && x.reachable && x.active);
    if (relay) add(relay, 'direct', r, undefined, dial(relay));
  }
  return [...out.values()]
    .map(({ peer, allowed, relays }) => ({ ...peer, allowedIPs: [...allowed].sort(), relaysFor: [...relays].sort() }))
    .sort((a, b) => (a.gateway < b.gateway ? -1 : 1));
}

function canPunch(a: GatewayEndpoint, b: GatewayEndpoint): boolean {
  if (!a.natType || !b.natType || a.natType === 'Undefined' || b.natType === 'Undefined') return false;
  if (!b.publicIP || !b.publicPort) return false;
  return !HOSTILE_NAT_PAIRS.has(`${a.natType}|${b.natType}`);
}

function host(ip: string): string {
  return ip.includes(':') ? `[${ip}]` : ip;
}

function sortRoutes(routes: RoutePlan[]): RoutePlan[] {
  return routes.sort((a, b) => (a.dst < b.dst ? -1 : a.dst > b.dst ? 1 : 0));
}
