/**
 * The mesh model: who can dial whom, who relays for whom, which pairs punch through NAT, and the
 * path between two regions. Pure, and the only place these questions are answered: the compiler's
 * checks ask it about the typed topology (`regionGateway`), the agent's plan, the proxy role and
 * `raven lab check` about Gateways read from the cluster (`gatewayOf`). Both supply the same small
 * structural input, so a topology that validates is planned the way it was checked.
 *
 * Raven's rules (../shared/reference/raven-spec.md 3.7, 3.12): a gateway is dialable when it is
 * exposed, not under NAT and has a public address; two gateways connect directly when either is
 * dialable; two that are not connect edge-to-edge when NAT traversal is on and their NAT types
 * allow hole punching; otherwise through a relay, the first dialable gateway by name that is
 * neither of them (every side computes the same one without talking); with no relay, not at all.
 */
import type { Gateway, GatewayEndpoint } from '../contract/gateway.js';
import { endpointsOfType, type Endpoint, type Region } from './model.js';

/** What the mesh needs of an endpoint; a runtime `GatewayEndpoint` is one as it is. */
export interface MeshEndpoint {
  /** It reaches the others only through outbound NAT. @default false */
  readonly underNAT?: boolean;
  /** The address others dial; never parsed here, only present or not. */
  readonly publicIP?: string;
  /** STUN classification of its NAT (`Symmetric NAT`, ...), written by NAT traversal. */
  readonly natType?: string;
  /** The NAT's mapped port: the hole the other side punches to. */
  readonly publicPort?: number;
}

/** What the mesh needs of a gateway (one per region). */
export interface MeshGateway {
  readonly name: string;
  /** `PublicIP` or `LoadBalancer` is exposed; anything else (`none`, empty, absent) is not. */
  readonly exposeType?: string;
  /** Its active tunnel endpoint (for the compiler: the one that will be); absent when there is none. */
  readonly active?: MeshEndpoint;
}

export interface MeshOptions {
  /** Edge pairs may punch through NAT (`vpn.natTraversal`, the agent's `--nat-traversal`). */
  readonly natTraversal: boolean;
}

/** How traffic from one gateway's region gets to another's. */
export type MeshPath<G extends MeshGateway = MeshGateway> =
  | { readonly kind: 'direct' }
  | { readonly kind: 'edge-to-edge' }
  | { readonly kind: 'relayed'; readonly via: G }
  | { readonly kind: 'none' };

/**
 * The compiler's stand-in for the address a LoadBalancer Service will be given: the model knows it
 * will exist, not what it is. Never rendered or dialled.
 */
export const LOAD_BALANCER_ADDRESS = '<load balancer address>';

/** NAT types between which hole punching cannot work (Raven's rule, from STUN classification). */
const HOSTILE_NAT_PAIRS = new Set(['Symmetric NAT|Symmetric NAT', 'Symmetric NAT|Port Restricted cone NAT', 'Port Restricted cone NAT|Symmetric NAT']);

/** The gateway is meant to be dialled: exposed by a public address or a load balancer. */
export function isExposed(exposeType: string | undefined): boolean {
  return exposeType === 'PublicIP' || exposeType === 'LoadBalancer';
}

/**
 * Others may dial this endpoint: its gateway is exposed and it is not behind NAT (a NATed
 * endpoint of an exposed gateway is dialled by nobody). Its address may still be pending (a load
 * balancer's): this is the question for the side that listens.
 */
export function acceptsDials(exposeType: string | undefined, e: MeshEndpoint | undefined): boolean {
  return isExposed(exposeType) && !e?.underNAT;
}

/** Others can dial this endpoint now: it accepts dials and its public address is known. */
export function isDialable(exposeType: string | undefined, e: MeshEndpoint | undefined): boolean {
  return acceptsDials(exposeType, e) && !!e?.publicIP;
}

/** Other regions can dial this gateway: its active tunnel endpoint is dialable. */
export function isReachable(g: MeshGateway): boolean {
  return isDialable(g.exposeType, g.active);
}

/**
 * Two endpoints can punch through their NATs to each other: both know their NAT's type and
 * mapping (public address and port), and the pair is not one hole punching fails between.
 * Symmetric in its two endpoints, so both sides reach the same answer.
 */
export function canPunch(a: MeshEndpoint, b: MeshEndpoint): boolean {
  for (const e of [a, b]) if (!e.natType || e.natType === 'Undefined' || !e.publicIP || !e.publicPort) return false;
  return !HOSTILE_NAT_PAIRS.has(`${a.natType}|${b.natType}`);
}

/** Paths between the gateways of one mesh, with its relays worked out once. */
export interface Mesh<G extends MeshGateway> {
  readonly gateways: readonly G[];
  /** Reachable gateways sorted by name: the relays, in the order they are chosen. */
  readonly relays: readonly G[];
  pathBetween(a: G, b: G): MeshPath<G>;
  /** Who carries traffic between `a` and `b`, when they cannot talk directly or edge-to-edge. */
  relayBetween(a: G, b: G): G | undefined;
  /** Gateways with a tunnel endpoint that have no path to some other gateway with one. */
  isolated(): G[];
}

export function buildMesh<G extends MeshGateway>(gateways: readonly G[], opts: MeshOptions): Mesh<G> {
  const relays = gateways.filter(isReachable).sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  const pathBetween = (a: G, b: G): MeshPath<G> => {
    if (!a.active || !b.active) return { kind: 'none' };
    if (isReachable(a) || isReachable(b)) return { kind: 'direct' };
    if (opts.natTraversal && canPunch(a.active, b.active)) return { kind: 'edge-to-edge' };
    // Neither a nor b is reachable, so neither is a relay: the first relay serves.
    const via = relays[0];
    return via ? { kind: 'relayed', via } : { kind: 'none' };
  };
  return {
    gateways,
    relays,
    pathBetween,
    relayBetween: (a, b) => {
      const p = pathBetween(a, b);
      return p.kind === 'relayed' ? p.via : undefined;
    },
    isolated: () => {
      // With a relay every pair has a path; without one, only pairs that punch through do.
      if (relays.length > 0) return [];
      const tunnels = gateways.filter((g) => g.active);
      return tunnels.filter((g) => tunnels.some((h) => h !== g && pathBetween(g, h).kind === 'none'));
    },
  };
}

/** The mesh's view of a Gateway read from the cluster: its active tunnel endpoint is the one. */
export function gatewayOf(gw: Gateway): MeshGateway & { readonly active?: GatewayEndpoint } {
  const active = gw.status?.activeEndpoints?.find((e) => e.type === 'tunnel');
  return { name: gw.metadata.name, ...(gw.spec?.exposeType !== undefined && { exposeType: gw.spec.exposeType }), ...(active && { active }) };
}

/**
 * The mesh's view of one endpoint of a topology region, as it will be at runtime: the region's
 * `underNAT`, and its `publicIP` (a LoadBalancer region's address comes from its Service).
 * Without `e`, the region's NAT alone (for questions about the region rather than an endpoint).
 */
export function regionEndpoint(r: Region, e?: Endpoint): MeshEndpoint {
  const publicIP = r.exposure === 'LoadBalancer' ? LOAD_BALANCER_ADDRESS : e?.publicIP;
  return { underNAT: r.underNAT, ...(publicIP !== undefined && { publicIP }) };
}

/**
 * The mesh's view of a topology region, as it will be at runtime: a tunnel endpoint becomes
 * active when the region asks for one (`replicas.tunnel`) and lists a candidate; NAT types are
 * found only at runtime, so the compiler never counts on hole punching.
 */
export function regionGateway(r: Region): MeshGateway {
  const tunnels = endpointsOfType(r, 'tunnel');
  // Validation asks a publicIP of every PublicIP endpoint; one that lacks it is reported there.
  const active = r.replicas.tunnel > 0 && tunnels.length > 0 ? regionEndpoint(r, tunnels.find((e) => e.publicIP !== undefined) ?? tunnels[0]) : undefined;
  return { name: r.gatewayName, exposeType: r.exposure, ...(active && { active }) };
}
