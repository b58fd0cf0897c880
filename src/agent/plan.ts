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
import ipaddr from 'ipaddr.js';
import { type Cidr, hostCidr, overlaps, parseCidr } from '../platform/cidr.js';
import { BACKEND_OVERHEAD, IPSEC_MAX_MTU } from '../contract/names.js';
import { type Dropped, isWireGuardKey, objectName, sortDropped } from '../platform/canonical.js';
import { type Gateway, type GatewayEndpoint, parseGateway, STANDBY_KEYS_CONFIG } from '../contract/gateway.js';
import { buildMesh, gatewayOf, isDialable, isReachable, type Mesh, type MeshGateway } from '../topology/mesh.js';

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
  /** What we send from, as this peer sees it: our region, plus regions we relay for it (IPsec traffic selectors). */
  readonly localSubnets: readonly string[];
  /** Seconds; set when we are behind NAT, to keep the mapping open. */
  readonly keepaliveSeconds?: number;
  /** How we reach this peer itself. */
  readonly path: 'direct' | 'edge-to-edge';
  /** Regions whose traffic this peer relays for us (they cannot be reached otherwise). */
  readonly relaysFor: readonly string[];
  /** For edge-to-edge pairs: one side waits before initiating (simultaneous initiations deadlock). */
  readonly initiateDelayMs?: number;
  /** The peer's probe address (see `anchorOf`): pinged through the tunnel for RTT and loss. */
  readonly probeIP?: string;
}

/**
 * A remote standby's key, known before it becomes active, so its first handshake is accepted.
 * With an endpoint (the standby has a public address and we are behind NAT), we also dial it, so a
 * session with it exists before it takes over.
 */
export interface StagedPeer {
  readonly gateway: string;
  readonly node: string;
  readonly publicKey: string;
  readonly endpoint?: string;
  readonly keepaliveSeconds?: number;
  /**
   * The standby's own probe address (`anchorOf` its first pod subnet): its only allowed IP here, so
   * its warm probes are answered through its own session while the region's ranges stay with the
   * active peer (the longer prefix wins).
   */
  readonly probeIP?: string;
}

export interface NodePlan {
  readonly role: Role;
  readonly gateway?: string;
  /** The region's active tunnel node, when there is one. */
  readonly activeNode?: string;
  readonly routes: readonly RoutePlan[];
  readonly peers: readonly PeerPlan[];
  /** Gateway only: keys of the standbys of the regions we hold tunnels with. */
  readonly staged: readonly StagedPeer[];
  /**
   * Gateways and warm standbys: this node's probe address, held on the tunnel device; peers ping
   * it, and probes of theirs are sent from it.
   */
  readonly probeSource?: string;
  readonly mtu: number;
  /** Values from the Gateways that were refused, and why (sorted): logged and counted by the agent. */
  readonly dropped?: readonly Dropped[];
}

export interface PlanOptions {
  readonly node: string;
  readonly backend: 'wireguard' | 'ipsec';
  /** Tunnel device name on WireGuard gateways. */
  readonly device: string;
  readonly natTraversal: boolean;
  readonly forwardNodeIP: boolean;
  /** Tunnel MTU from config; 0 means underlay MTU minus the backend overhead. */
  readonly mtu: number;
  readonly underlayMTU: number;
  /**
   * Standbys keep a warm tunnel (WireGuard): the device up with the peers they would have as the
   * active gateway, and sessions to whichever peers they can dial, but no route into it.
   */
  readonly warmStandby?: boolean;
}

export const KEEPALIVE_SECONDS = 5;
export const EDGE_STAGGER_MS = 200;
/**
 * strongSwan's userspace ESP (kernel-libipsec) reads at most 1400-byte packets from its TUN. Every
 * node caps the IPsec MTU there, so members agree with their gateway without knowing its ESP mode.
 * The limit is the contract's (validation and the compiler know it too).
 */
export { IPSEC_MAX_MTU };
/**
 * One Gateway as the plan sees it: the mesh's view of it (name, exposure, active tunnel endpoint;
 * src/topology/mesh.ts answers who dials, punches and relays), plus what it routes.
 */
interface PlannedGateway extends MeshGateway {
  readonly gw: Gateway;
  readonly active?: GatewayEndpoint;
  readonly subnets: readonly string[];
  /** Probe address of the active tunnel node. */
  readonly anchor?: string;
}

const byName = (a: { name: string }, b: { name: string }): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

export function effectiveMTU(opts: Pick<PlanOptions, 'backend' | 'mtu' | 'underlayMTU'>): number {
  const mtu = opts.mtu > 0 ? opts.mtu : opts.underlayMTU - BACKEND_OVERHEAD[opts.backend];
  return opts.backend === 'ipsec' ? Math.min(mtu, IPSEC_MAX_MTU) : mtu;
}

/**
 * The plan for one node. Gateways are read as hostile: each is parsed (`parseGateway`: bad
 * addresses, ranges, ports and keys are left out), then ranges that would take over traffic that is
 * not a remote region's are refused (`refuseConflicts`). Everything refused is in `dropped`.
 */
export function plan(gateways: readonly unknown[], opts: PlanOptions): NodePlan {
  const dropped: Dropped[] = [];
  const parsed: Gateway[] = [];
  for (const raw of gateways) {
    const p = parseGateway(raw);
    dropped.push(...p.dropped);
    if (p.gateway) parsed.push(p.gateway);
  }
  const result = planParsed(parsed, opts, dropped);
  return { ...result, dropped: sortDropped(dropped) };
}

function planParsed(gateways: readonly Gateway[], opts: PlanOptions, dropped: Dropped[]): Omit<NodePlan, 'dropped'> {
  const mtu = effectiveMTU(opts);
  const all: PlannedGateway[] = gateways.map((gw) => plannedGateway(gw, opts.forwardNodeIP)).sort(byName);
  const mine = all.find((r) => r.gw.status?.nodes?.some((n) => n.nodeName === opts.node));
  const none = { routes: [], peers: [], staged: [], mtu };
  if (!mine) return { role: 'outside', ...none };
  const regions = refuseConflicts(all, mine, dropped);

  const remotes = regions.filter((r) => r !== mine && r.active && r.subnets.length > 0);
  const activeNode = mine.active?.nodeName;
  const notActive: Role = isTunnelCandidate(mine.gw, opts.node) ? 'standby' : 'member';
  if (!activeNode) return { role: notActive, gateway: mine.name, ...none };

  if (activeNode !== opts.node) {
    const via = mine.gw.status?.nodes?.find((n) => n.nodeName === activeNode)?.privateIP;
    const routes = via ? remotes.flatMap((r) => r.subnets.map((dst) => ({ dst, via, mtu }))) : [];
    const base: Omit<NodePlan, 'dropped'> = { role: notActive, gateway: mine.name, activeNode, ...none, routes: sortRoutes(routes) };
    if (notActive !== 'standby' || !opts.warmStandby || opts.backend !== 'wireguard') return base;
    // Warm: the peers this node would have as the active gateway (direct ones: edge-to-edge pairs
    // punch only once they are active), so a failover needs no new handshake.
    // Its probes of the remote gateways go through the warm tunnel (host routes to their probe
    // addresses), so what it reports is what it would carry as the active: data-path evidence.
    const me = asActive(mine, opts.node);
    const warm = peers(me, remotes, buildMesh(regions.map((r) => (r === mine ? me : r)), opts)).filter((p) => p.path === 'direct');
    const probeRoutes = me.anchor ? warm.flatMap((p) => (p.probeIP ? [{ dst: hostCidr(p.probeIP), dev: opts.device, mtu }] : [])) : [];
    return { ...base, routes: sortRoutes([...routes, ...probeRoutes]), peers: warm, staged: staged(warm, remotes, me), ...(me.anchor && { probeSource: me.anchor }) };
  }

  const tunnelPeers = peers(mine, remotes, buildMesh(regions, opts));
  // WireGuard: every remote destination goes into the device, also those no peer carries yet (they
  // are dropped there rather than leaking out of the default route unencrypted). Never a peer's own
  // underlay address, though (forwardNodeIP on a node whose InternalIP is the address we dial): the
  // tunnel would carry itself. IPsec: charon installs its own routes (table 220), ours stay empty.
  const underlay = new Set(tunnelPeers.flatMap((p) => (p.endpoint ? [unbracket(p.endpoint)] : [])));
  const routes =
    opts.backend === 'wireguard'
      ? remotes.flatMap((r) => r.subnets.filter((s) => ![...underlay].some((ip) => isHostRoute(s, ip))).map((dst) => ({ dst, dev: opts.device, mtu })))
      : [];
  return {
    role: 'gateway',
    gateway: mine.name,
    activeNode,
    routes: sortRoutes(routes),
    peers: tunnelPeers,
    staged: staged(tunnelPeers, remotes, mine),
    ...(mine.anchor && { probeSource: mine.anchor }),
    mtu,
  };
}

function plannedGateway(gw: Gateway, forwardNodeIP: boolean): PlannedGateway {
  const mesh = gatewayOf(gw);
  const active = mesh.active;
  const subnets = new Set<string>();
  for (const n of gw.status?.nodes ?? []) {
    for (const s of n.subnets) subnets.add(s);
    if (forwardNodeIP && n.privateIP) subnets.add(n.privateIP.includes(':') ? `${n.privateIP}/128` : `${n.privateIP}/32`);
  }
  return {
    ...mesh,
    gw,
    ...(active && { active }),
    subnets: [...subnets].sort(),
    ...withAnchor(gw, active),
  };
}

function withAnchor(gw: Gateway, active: GatewayEndpoint | undefined): { anchor?: string } {
  const anchor = active && anchorOf(gw.status?.nodes?.find((n) => n.nodeName === active.nodeName)?.subnets[0]);
  return anchor ? { anchor } : {};
}

/**
 * Ranges of remote regions that must not be routed, removed (and reported): those overlapping our
 * own region's ranges or containing one of its node addresses (they would pull our own traffic
 * into the tunnel), those containing an address a tunnel is dialled at (the tunnel would carry
 * itself), ranges containing another region's, and the same range claimed by two regions
 * (whichever we picked, the other could be hijacked). Every node computes the same from the same
 * input, apart from its own region's ranges.
 */
function refuseConflicts(all: readonly PlannedGateway[], mine: PlannedGateway, dropped: Dropped[]): PlannedGateway[] {
  const local: { cidr: Cidr; what: string }[] = [];
  const add = (list: { cidr: Cidr; what: string }[], text: string, what: string): void => {
    const p = parseCidr(text.includes('/') ? text : `${text}/${text.includes(':') ? 128 : 32}`);
    if (p.ok) list.push({ cidr: p.cidr, what });
  };
  for (const s of mine.subnets) add(local, s, `range ${s} of our own region ${mine.name}`);
  for (const n of mine.gw.status?.nodes ?? []) if (n.privateIP) add(local, n.privateIP, `address ${n.privateIP} of ${n.nodeName} in our own region`);
  const underlay: { cidr: Cidr; what: string }[] = [];
  for (const r of all) {
    for (const e of [...(r.gw.status?.activeEndpoints ?? []), ...(r.gw.spec?.endpoints ?? [])]) if (e.publicIP) add(underlay, e.publicIP, `public address ${e.publicIP} of ${r.name}`);
  }
  const claims: { cidr: Cidr; region: string }[] = [];
  for (const r of all) {
    if (r === mine) continue;
    for (const s of r.subnets) {
      const p = parseCidr(s);
      if (p.ok) claims.push({ cidr: p.cidr, region: r.name });
    }
  }
  const refused = new Map<string, Set<string>>();
  const refuse = (region: string, subnet: string, reason: string): void => {
    const set = refused.get(region) ?? refused.set(region, new Set()).get(region)!;
    if (set.has(subnet)) return;
    set.add(subnet);
    dropped.push({ source: region, kind: 'subnet-conflict', reason: `${subnet} not routed: ${reason}` });
  };
  for (const c of claims) {
    // A host route of exactly a dialled address (forwardNodeIP on a node whose InternalIP is its
    // public one) is fine: gateways never send it into the tunnel (see `isHostRoute`).
    const hit = local.find((x) => overlaps(c.cidr, x.cidr)) ?? underlay.find((x) => overlaps(c.cidr, x.cidr) && !(c.cidr.first === c.cidr.last && x.cidr.first === c.cidr.first));
    if (hit) refuse(c.region, c.cidr.text, `it overlaps the ${hit.what}`);
  }
  // Two CIDRs that overlap are equal or one holds the other. A range holding another region's is
  // refused (no region's pods contain another's; the narrower claim keeps working); the same range
  // claimed twice is refused on both sides, since either could be the hijacker.
  for (const [a, b] of crossRegionOverlaps(claims)) {
    const aWider = a.cidr.first <= b.cidr.first && a.cidr.last >= b.cidr.last;
    const bWider = b.cidr.first <= a.cidr.first && b.cidr.last >= a.cidr.last;
    if (aWider && bWider) {
      refuse(a.region, a.cidr.text, `${b.region} claims the same range`);
      refuse(b.region, b.cidr.text, `${a.region} claims the same range`);
    } else if (aWider) refuse(a.region, a.cidr.text, `it contains ${b.cidr.text} of ${b.region}`);
    else refuse(b.region, b.cidr.text, `it contains ${a.cidr.text} of ${a.region}`);
  }
  if (refused.size === 0) return [...all];
  return all.map((r) => {
    const bad = refused.get(r.name);
    return bad ? { ...r, subnets: r.subnets.filter((s) => !bad.has(s)), ...withAnchor({ ...r.gw, status: { ...r.gw.status, nodes: (r.gw.status?.nodes ?? []).map((n) => ({ ...n, subnets: n.subnets.filter((s) => !bad.has(s)) })) } }, r.active) } : r;
  });
}

/** Pairs of overlapping ranges claimed by different regions: one sort, then a sweep over open ranges. */
function crossRegionOverlaps<T extends { cidr: Cidr; region: string }>(items: readonly T[]): [T, T][] {
  const sorted = [...items].sort((a, b) => a.cidr.family - b.cidr.family || (a.cidr.first < b.cidr.first ? -1 : a.cidr.first > b.cidr.first ? 1 : 0));
  const out: [T, T][] = [];
  let open: T[] = [];
  for (const item of sorted) {
    open = open.filter((o) => o.cidr.family === item.cidr.family && o.cidr.last >= item.cidr.first);
    for (const o of open) if (o.region !== item.region) out.push([o, item]);
    open.push(item);
  }
  return out;
}

/**
 * A gateway's probe address: the network address of its node's first pod subnet. It is inside the
 * region's routed ranges (so every tunnel already carries it, with no extra route or traffic
 * selector) and no pod is given it by host-local or flannel IPAM. Absent for tiny subnets.
 */
export function anchorOf(subnet: string | undefined): string | undefined {
  if (!subnet) return undefined;
  try {
    const [addr, len] = ipaddr.parseCIDR(subnet);
    if (addr.kind() === 'ipv4') return len <= 30 ? ipaddr.IPv4.networkAddressFromCIDR(subnet).toString() : undefined;
    return len <= 126 ? ipaddr.IPv6.networkAddressFromCIDR(subnet).toString() : undefined;
  } catch {
    return undefined;
  }
}

/** `mine` as it would be with `node` as its active tunnel endpoint (for a standby's warm tunnel). */
function asActive(mine: PlannedGateway, node: string): PlannedGateway {
  const spec = mine.gw.spec?.endpoints?.find((e) => e.nodeName === node && e.type === 'tunnel');
  const current = mine.active!;
  const active: GatewayEndpoint = { ...current, ...spec, nodeName: node, type: 'tunnel', ...(spec?.publicIP ? { publicIP: spec.publicIP } : {}) };
  if (!spec?.publicIP) delete active.publicIP;
  const { anchor: _current, ...rest } = mine;
  return { ...rest, active, ...withAnchor(mine.gw, active) };
}

/** `node` is one of the Gateway's tunnel endpoint candidates (a standby while another is active). */
function isTunnelCandidate(gw: Gateway, node: string): boolean {
  return (gw.spec?.endpoints ?? []).some((e) => e.nodeName === node && e.type === 'tunnel');
}

/**
 * One peer per remote region, on the path the mesh gives (`Mesh.pathBetween`): direct when either
 * side can be dialed; edge-to-edge when both are behind NAT, NAT traversal is on and their NAT
 * types allow it; otherwise through a relay.
 */
function peers(mine: PlannedGateway, remotes: readonly PlannedGateway[], mesh: Mesh<PlannedGateway>): PeerPlan[] {
  const out = new Map<string, { peer: PeerPlan; allowed: Set<string>; relays: Set<string> }>();
  const add = (r: PlannedGateway, path: PeerPlan['path'], endpoint?: string, initiateDelayMs?: number): { allowed: Set<string>; relays: Set<string> } => {
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
          localSubnets: [],
          ...(!isReachable(mine) && { keepaliveSeconds: KEEPALIVE_SECONDS }),
          path,
          relaysFor: [],
          ...(initiateDelayMs !== undefined && { initiateDelayMs }),
          ...(r.anchor && { probeIP: r.anchor }),
        },
      };
      out.set(r.name, entry);
    }
    return entry;
  };
  const dial = (r: PlannedGateway): string | undefined => (isReachable(r) ? `${host(r.active!.publicIP!)}:${r.active!.port ?? 4500}` : undefined);

  for (const r of remotes) {
    const path = mesh.pathBetween(mine, r);
    if (path.kind === 'direct') add(r, 'direct', dial(r));
    // The lexicographically later gateway waits: both sides agree without talking.
    else if (path.kind === 'edge-to-edge') add(r, 'edge-to-edge', `${host(r.active!.publicIP!)}:${r.active!.publicPort}`, mine.name > r.name ? EDGE_STAGGER_MS : 0);
    else if (path.kind === 'relayed') {
      const entry = add(path.via, 'direct', dial(path.via));
      entry.relays.add(r.name);
      for (const s of r.subnets) entry.allowed.add(s);
    }
  }
  return [...out.values()]
    .map(({ peer, allowed, relays }) => {
      // As a relay, we also send (to this peer) from the regions whose traffic we carry for it.
      const local = new Set(mine.subnets);
      const peerGateway = mesh.gateways.find((x) => x.name === peer.gateway)!;
      for (const r of remotes) if (r !== peerGateway && mesh.relayBetween(peerGateway, r) === mine) for (const s of r.subnets) local.add(s);
      const endpointHost = peer.endpoint ? unbracket(peer.endpoint) : undefined;
      return {
        ...peer,
        // Never route a peer's own underlay address into its tunnel (forwardNodeIP on a node whose
        // InternalIP is the address we dial): the tunnel would carry itself.
        allowedIPs: [...allowed].filter((s) => !endpointHost || !isHostRoute(s, endpointHost)).sort(),
        localSubnets: [...local].sort(),
        relaysFor: [...relays].sort(),
      };
    })
    .sort((a, b) => (a.gateway < b.gateway ? -1 : 1));
}

/** The standbys of every region we hold a tunnel with, whose keys the controller has published. */
function staged(tunnelPeers: readonly PeerPlan[], remotes: readonly PlannedGateway[], mine: PlannedGateway): StagedPeer[] {
  const out: StagedPeer[] = [];
  for (const p of tunnelPeers) {
    const r = remotes.find((x) => x.name === p.gateway);
    for (const [node, publicKey] of Object.entries(standbyKeys(r?.active))) {
      if (node === p.node || publicKey === p.publicKey) continue;
      // A standby we can dial (its region is exposed and it has a public address), dialled from
      // behind our NAT, gets a session now: it may be the one we need in a second.
      const spec = r!.gw.spec?.endpoints?.find((e) => e.nodeName === node && e.type === 'tunnel');
      const dialable = !isReachable(mine) && isDialable(r!.exposeType, spec);
      // Only inside a range we route to that region (a refused range gives no probe address).
      const first = r!.gw.status?.nodes?.find((n) => n.nodeName === node)?.subnets[0];
      const probeIP = first && r!.subnets.includes(first) ? anchorOf(first) : undefined;
      out.push({ gateway: p.gateway, node, publicKey, ...(dialable && { endpoint: `${host(spec!.publicIP!)}:${spec!.port ?? 4500}`, keepaliveSeconds: KEEPALIVE_SECONDS }), ...(probeIP && { probeIP }) });
    }
  }
  return out.sort((a, b) => (a.gateway < b.gateway ? -1 : a.gateway > b.gateway ? 1 : a.node < b.node ? -1 : 1));
}

/** `{node: key}` from the active endpoint's config, tolerating anything malformed. */
export function standbyKeys(active: GatewayEndpoint | undefined): Record<string, string> {
  const text = active?.config?.[STANDBY_KEYS_CONFIG];
  if (!text) return {};
  try {
    const raw = JSON.parse(text) as unknown;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return {};
    return Object.fromEntries(Object.entries(raw).filter((e): e is [string, string] => objectName(e[0]).ok && isWireGuardKey(e[1])));
  } catch {
    return {};
  }
}

function host(ip: string): string {
  return ip.includes(':') ? `[${ip}]` : ip;
}

function unbracket(endpoint: string): string {
  const m = /^\[(.*)\]:\d+$/.exec(endpoint) ?? /^(.*):\d+$/.exec(endpoint);
  return m ? m[1]! : endpoint;
}

function isHostRoute(cidr: string, ip: string): boolean {
  const [addr, len] = cidr.split('/');
  return (len === '32' || len === '128') && addr === ip;
}

function sortRoutes(routes: RoutePlan[]): RoutePlan[] {
  return routes.sort((a, b) => (a.dst < b.dst ? -1 : a.dst > b.dst ? 1 : 0));
}
