/**
 * Gateway election: which candidate endpoints of a Gateway are active. A pure function of
 * (Gateway spec and status, nodes, membership, heartbeats, raven-cfg switches, now); the controller
 * only gathers inputs and writes the result.
 *
 * - A candidate is a member node that is Ready, whose heartbeat is fresh, whose agent reports itself
 *   healthy and which healthy standbys do not report unreachable.
 * - The current active endpoint is kept while it stays a candidate (sticky); free slots are filled
 *   in spec order. Per type (`tunnel`, `proxy`), up to that type's Replicas.
 * - Every rejected candidate carries its reason; output is sorted, so equal inputs give equal output.
 * - Data-path health: an active tunnel endpoint that most remote regions lost through the tunnel
 *   (while they still reach others) is replaced by a standby they are proven to reach through the
 *   session staged for it, never by one not known to be better (`dataPathVerdict`).
 * - Static stability: while `holdExpired` is set (the controller has just regained sight of
 *   heartbeats, or a large share of them lapsed together), an expired heartbeat alone does not
 *   remove a current active endpoint; it is kept and listed in `held`. See `heartbeatDisruption`.
 */
import type { EndpointType } from '../topology/model.js';
import type { Gateway, GatewayEndpoint, NodeLike } from '../contract/gateway.js';
import { isNodeReady, STANDBY_KEYS_CONFIG } from '../contract/gateway.js';
import { CANDIDATE_LEASE_SECONDS, expiresAt, type Heartbeat, isLost, isReached, OBSERVATION_MAX_AGE_MS, renewPeriodMs } from '../contract/heartbeat.js';
import { L3_TUNNEL_KEY, L7_PROXY_KEY } from '../contract/raven-cfg.js';

export interface Features {
  readonly l3Tunnel: boolean;
  readonly l7Proxy: boolean;
}

export interface ElectionInput {
  readonly gateway: Gateway;
  readonly nodes: ReadonlyMap<string, NodeLike>;
  /** The Gateway each node belongs to (see membership.assignNodes). */
  readonly memberOf: ReadonlyMap<string, string>;
  readonly heartbeats: ReadonlyMap<string, Heartbeat>;
  readonly features: Features;
  /** Milliseconds since the epoch. */
  readonly now: number;
  /**
   * Why an expired heartbeat is not evidence right now (see `holdReason`); when set, a current
   * active endpoint whose only fault is an expired heartbeat stays active. Other faults (NotReady,
   * backend down, standbys' votes) still fail it over, and candidates that are not active are still
   * rejected for an expired heartbeat: only fresh evidence elects.
   */
  readonly holdExpired?: string;
  /**
   * The active tunnel node of every other Gateway, by Gateway name: whose reports about this
   * Gateway count (a remote standby's do not). Without it, no data-path evidence is weighed.
   */
  readonly remoteActives?: ReadonlyMap<string, string>;
  /** Until when (ms since the epoch) no data-path failover of this Gateway is made: one was just made. */
  readonly dataPathHoldUntil?: number;
}

export interface Rejection {
  readonly node: string;
  readonly type: EndpointType;
  readonly reason: string;
}

export interface ElectionResult {
  /** Sorted by node name, then type. */
  readonly active: GatewayEndpoint[];
  /** Healthy candidates not elected for lack of slots: ready to take over. */
  readonly standbys: { readonly node: string; readonly type: EndpointType }[];
  readonly rejected: Rejection[];
  /**
   * Current active endpoints kept although their heartbeat expired (`holdExpired`), or although
   * remote regions lost them, for want of a better candidate or within the hold-down; reason says
   * which, with the evidence.
   */
  readonly held: Rejection[];
  /** A tunnel endpoint replaced for data-path evidence: the controller starts its hold-down. */
  readonly dataPathFailover?: { readonly from: string; readonly to: string; readonly evidence: string };
}

const TYPES: readonly EndpointType[] = ['proxy', 'tunnel'];
const SWITCH: Record<EndpointType, { key: string; on: (f: Features) => boolean }> = {
  tunnel: { key: L3_TUNNEL_KEY, on: (f) => f.l3Tunnel },
  proxy: { key: L7_PROXY_KEY, on: (f) => f.l7Proxy },
};

function replicasOf(gw: Gateway, type: EndpointType): number {
  const r = type === 'tunnel' ? gw.spec?.tunnelConfig?.Replicas : gw.spec?.proxyConfig?.Replicas;
  return typeof r === 'number' && r > 0 ? Math.floor(r) : 0;
}

export function elect(input: ElectionInput): ElectionResult {
  const { gateway } = input;
  const active: GatewayEndpoint[] = [];
  const standbys: { node: string; type: EndpointType }[] = [];
  const rejected: Rejection[] = [];
  const held: Rejection[] = [];
  let dataPathFailover: ElectionResult['dataPathFailover'];

  for (const type of TYPES) {
    const candidates = uniqueByNode((gateway.spec?.endpoints ?? []).filter((e) => e.type === type));
    if (candidates.length === 0) continue;
    const replicas = replicasOf(gateway, type);
    if (!SWITCH[type].on(input.features)) {
      for (const c of candidates) rejected.push({ node: c.nodeName, type, reason: `${SWITCH[type].key} is off in raven-cfg` });
      continue;
    }
    if (replicas === 0) {
      for (const c of candidates) rejected.push({ node: c.nodeName, type, reason: `${type} replicas is 0 in the Gateway spec` });
      continue;
    }
    const current = new Set((gateway.status?.activeEndpoints ?? []).filter((e) => e.type === type).map((e) => e.nodeName));
    const healthy: GatewayEndpoint[] = [];
    for (const c of candidates) {
      const isCurrent = current.has(c.nodeName);
      const reason = rejectionReason(input, c, isCurrent);
      if (reason) {
        rejected.push({ node: c.nodeName, type, reason });
        continue;
      }
      healthy.push(c);
      const expired = isCurrent ? expiredFor(input, c.nodeName) : undefined;
      if (expired) held.push({ node: c.nodeName, type, reason: `${expired}, not failed over: ${input.holdExpired}` });
    }
    // Data path: a current tunnel active that remote regions lost gives way to a standby proven to
    // reach them, which goes first; without one, or within the hold-down, it stays (held).
    let preferred: string | undefined;
    if (type === 'tunnel') {
      for (const a of healthy.filter((c) => current.has(c.nodeName))) {
        const verdict = dataPathVerdict(input, a.nodeName, healthy.filter((c) => !current.has(c.nodeName)));
        if (!verdict) continue;
        if (verdict.uncorroborated) {
          held.push({ node: a.nodeName, type, reason: `${DATA_PATH_PREFIX}${verdict.evidence}; not failed over: too few credible witnesses` });
        } else if (input.dataPathHoldUntil !== undefined && input.now < input.dataPathHoldUntil) {
          held.push({ node: a.nodeName, type, reason: `${DATA_PATH_PREFIX}${verdict.evidence}; not failed over: another data-path failover of this Gateway was made ${DATAPATH_HOLD_DOWN_MS / 1000} s ago or less` });
        } else if (!verdict.replacement) {
          held.push({ node: a.nodeName, type, reason: `${DATA_PATH_PREFIX}${verdict.evidence}; not failed over: no standby is known to be better` });
        } else {
          healthy.splice(healthy.indexOf(a), 1);
          rejected.push({ node: a.nodeName, type, reason: verdict.evidence });
          preferred = verdict.replacement;
          dataPathFailover = { from: a.nodeName, to: verdict.replacement, evidence: verdict.evidence };
        }
      }
    }
    // Sticky: current actives first (in spec order), then a proven replacement, then the rest in spec order.
    const rank = (c: GatewayEndpoint): number => (current.has(c.nodeName) ? 0 : c.nodeName === preferred ? 1 : 2);
    const ordered = [0, 1, 2].flatMap((r) => healthy.filter((c) => rank(c) === r));
    ordered.forEach((c, i) => {
      if (i < replicas) active.push(stamp(c, type, input));
      else standbys.push({ node: c.nodeName, type });
    });
  }

  return {
    active: active.sort((a, b) => compare(a.nodeName, a.type, b.nodeName, b.type)),
    standbys: standbys.sort((a, b) => compare(a.node, a.type, b.node, b.type)),
    rejected: rejected.sort((a, b) => compare(a.node, a.type, b.node, b.type)),
    held: held.sort((a, b) => compare(a.node, a.type, b.node, b.type)),
    ...(dataPathFailover && { dataPathFailover }),
  };
}

/*
 * Data-path health (docs/0003-controller.md, "Data-path failover"). Every gateway and warm standby
 * pings the remote gateways' probe addresses through the tunnel and reports each peer with the node
 * it probed and its run of unanswered probes (contract/heartbeat.ts). For an active A of Gateway G:
 * - a report about G counts when it comes from another Gateway's active node, with a live
 *   heartbeat, about A (not about G's previous active);
 * - a region that lost A is a credible witness when it still reaches some other region, or a
 *   standby of G (gateways probe the remote standbys they stage, and report them in the same
 *   report): a region that reaches nobody may be the one cut off;
 * - A is failing when credible witnesses are more than half of the regions reporting about it;
 *   when two or more regions, more than half, lost it but too few are credible, it is held
 *   (`uncorroborated`), so the log says why a gateway that looks failing was kept;
 * - it is replaced only by a standby that more of the reporting regions reach than reach A
 *   (`replacement`), each in the same report that lost A: a fresh loss is never weighed against an
 *   old success. When every candidate shares one uplink (a NATed edge), a WAN outage leaves
 *   none better, and nothing changes.
 */

/** How a held entry's reason starts when data-path evidence, not an expired heartbeat, was held back. */
export const DATA_PATH_PREFIX = 'data path: ';

/**
 * Every Gateway's active tunnel node, by Gateway name, from cached (unparsed) Gateways: a
 * malformed one contributes nothing.
 */
export function activeTunnelNodes(gateways: readonly Gateway[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const gw of gateways) {
    const list: unknown = gw?.status?.activeEndpoints;
    if (!Array.isArray(list)) continue;
    const e = (list as unknown[]).find((x) => (x as { type?: unknown } | null)?.type === 'tunnel') as { nodeName?: unknown } | undefined;
    if (typeof e?.nodeName === 'string' && typeof gw.metadata?.name === 'string') out.set(gw.metadata.name, e.nodeName);
  }
  return out;
}

/** After a data-path failover of a Gateway, no other for this long (damping: random loss must not flap gateways). */
export const DATAPATH_HOLD_DOWN_MS = 10_000;

export interface DataPathVerdict {
  /** Remote regions (Gateways) that lost the active, credibly, sorted. */
  readonly lostBy: readonly string[];
  /** Remote regions reporting about the active at all. */
  readonly reporting: number;
  /**
   * Most reporting regions lost the active, but no majority of them are credible witnesses (each
   * of the rest reaches no other region and no standby): never a failover, held and logged.
   */
  readonly uncorroborated?: true;
  /** A standby that more of the reporting regions reach than reach the active, if any. */
  readonly replacement?: string;
  /** "2/2 remote regions lost gw-cloud via cloud-gw-1 for 600 ms or more (gw-hangzhou, gw-qingdao); 2/2 reach standby cloud-gw-2". */
  readonly evidence: string;
}

/** Whether remote regions' tunnel probes say `active` is failing, and who would do better (see above). */
export function dataPathVerdict(input: ElectionInput, active: string, standbys: readonly GatewayEndpoint[]): DataPathVerdict | undefined {
  const gw = input.gateway.metadata.name;
  const remotes = input.remoteActives;
  if (!remotes) return undefined;
  const live = (node: string): Heartbeat | undefined => {
    const hb = input.heartbeats.get(node);
    return hb && input.now <= expiresAt(hb) ? hb : undefined;
  };
  const reports: { region: string; lost: boolean; lostForMs: number; reachesOthers: boolean; reaches: Set<string> }[] = [];
  for (const [region, node] of [...remotes].sort(([a], [b]) => (a < b ? -1 : 1))) {
    if (region === gw) continue;
    const peers = live(node)?.health?.peers;
    const p = peers?.[gw];
    if (!p || p.node !== active) continue;
    const reachesOthers = Object.entries(peers!).some(([other, q]) => other !== gw && q.node === remotes.get(other) && isReached(q));
    const reaches = new Set(standbys.filter((s) => isReached(p.standbys?.[s.nodeName])).map((s) => s.nodeName));
    reports.push({ region, lost: isLost(p), lostForMs: p.lostForMs ?? 0, reachesOthers, reaches });
  }
  const lost = reports.filter((r) => r.lost);
  if (lost.length * 2 <= reports.length) return undefined;
  const lostBy = lost.filter((r) => r.reachesOthers || r.reaches.size > 0);
  if (lostBy.length * 2 <= reports.length) {
    // A lone region that lost it and reaches nothing else is most likely the one cut off: nothing
    // is said (a hub whose uplink failed would otherwise make a held decision of every edge).
    if (lost.length < 2) return undefined;
    // Several regions lost it, but too few of them reach anything else to be believed: held, and said.
    const blind = lost.filter((r) => !lostBy.includes(r)).map((r) => r.region);
    return {
      lostBy: lostBy.map((r) => r.region),
      reporting: reports.length,
      uncorroborated: true,
      evidence: `${lost.length}/${reports.length} remote regions lost ${gw} via ${active} for ${Math.round(Math.min(...lost.map((r) => r.lostForMs)))} ms or more (${lost.map((r) => r.region).join(', ')}); ${blind.length} of them (${blind.join(', ')}) reach no other region and no standby of ${gw}, so may be the ones cut off`,
    };
  }
  // What each standby is reached by: the reporting regions whose same report reaches it.
  const reach = standbys.map((s) => ({ node: s.nodeName, reaches: new Set(reports.filter((r) => r.reaches.has(s.nodeName)).map((r) => r.region)) }));
  const activeReaches = reports.filter((r) => !r.lost).length;
  const best = reach.reduce<(typeof reach)[number] | undefined>((b, s) => (s.reaches.size > (b?.reaches.size ?? activeReaches) ? s : b), undefined);
  const lostFor = Math.min(...lostBy.map((r) => r.lostForMs));
  const names = lostBy.map((r) => r.region).join(', ');
  const found = best ? `; ${best.reaches.size}/${reports.length} reach standby ${best.node}` : `; no standby is reached by more than ${activeReaches}/${reports.length}`;
  return {
    lostBy: lostBy.map((r) => r.region),
    reporting: reports.length,
    ...(best && { replacement: best.node }),
    evidence: `${lostBy.length}/${reports.length} remote regions lost ${gw} via ${active} for ${Math.round(lostFor)} ms or more (${names})${found}`,
  };
}

/**
 * What of a heartbeat any election reads, besides its expiry: two heartbeats of one node with the
 * same key elect alike, so a renewal that only moves the renew time needs no reconcile (the
 * controller arms a timer at the active's expiry). Run lengths count only as lost, reached or
 * neither, as `isLost` and `isReached` read them.
 */
export function evidenceKey(hb: Heartbeat): string {
  const h = hb.health;
  if (!h) return '';
  const verdict = (p: { lostProbes?: number; answeredProbes?: number }): string => (isLost(p) ? 'L' : isReached(p) ? 'R' : '-');
  const peers = Object.keys(h.peers)
    .sort()
    .map((g) => {
      const p = h.peers[g]!;
      const standbys = Object.keys(p.standbys ?? {}).sort().map((n) => `${n}=${verdict(p.standbys![n]!)}`);
      return `${g}:${p.node ?? ''}:${verdict(p)}:${standbys.join(',')}`;
    });
  const a = h.activeGateway;
  return JSON.stringify([h.backendUp, h.publicKey ?? '', a ? [a.node, a.reachable, a.lanReachable] : null, peers]);
}

/** "heartbeat expired N s ago" when `node`'s heartbeat has lapsed, else undefined. */
function expiredFor(input: ElectionInput, node: string): string | undefined {
  const hb = input.heartbeats.get(node);
  const expired = hb ? input.now - expiresAt(hb) : 0;
  return expired > 0 ? `heartbeat expired ${(expired / 1000).toFixed(1)} s ago` : undefined;
}

/** Why `c` cannot be active, or null when it can. Checks run cheapest-first; the first failure is the reason. */
function rejectionReason(input: ElectionInput, c: GatewayEndpoint, isCurrent: boolean): string | null {
  const gw = input.gateway.metadata.name;
  const node = input.nodes.get(c.nodeName);
  if (!node) return `node ${c.nodeName} does not exist`;
  const owner = input.memberOf.get(c.nodeName);
  if (owner !== gw) return owner ? `node is a member of ${owner}, not ${gw}` : `node is not a member of ${gw} (matches neither its nodeSelector nor its member-nodes)`;
  if (!isNodeReady(node)) return 'node is not Ready';
  const hb = input.heartbeats.get(c.nodeName);
  if (!hb) return `no heartbeat from its agent (Lease raven-agent-${c.nodeName})`;
  const expired = expiredFor(input, c.nodeName);
  if (expired && !(isCurrent && input.holdExpired)) return expired;
  if (!hb.health) return 'heartbeat carries no health report';
  if (c.type === 'tunnel' && !hb.health.backendUp) return 'agent reports its tunnel backend down';
  if (isCurrent) {
    const reporters = unreachableReports(input, c.nodeName);
    if (reporters.unreachable.length > 0 && reporters.unreachable.length * 2 > reporters.total) {
      return `unreachable from standby ${reporters.unreachable.join(', ')}, which still reach${reporters.unreachable.length === 1 ? 'es' : ''} the rest of the region`;
    }
  }
  return null;
}

/**
 * Reports about `target` from the Gateway's other candidates (its standbys) that are themselves
 * alive (fresh heartbeat) and not cut off (they reached their LAN in the same probe round). A standby
 * that reaches nothing cannot tell a dead gateway from its own dead link, so it does not vote.
 */
function unreachableReports(input: ElectionInput, target: string): { unreachable: string[]; total: number } {
  const gw = input.gateway.metadata.name;
  const standbys = [...new Set((input.gateway.spec?.endpoints ?? []).map((e) => e.nodeName))].filter((n) => n !== target).sort();
  const unreachable: string[] = [];
  let total = 0;
  for (const node of standbys) {
    const hb = input.heartbeats.get(node);
    if (!hb || input.memberOf.get(node) !== gw || input.now > expiresAt(hb)) continue;
    const seen = hb.health?.activeGateway;
    if (!seen || seen.node !== target || !seen.lanReachable) continue;
    // Written when it changes: it must have been fresh when written, and stands while the heartbeat lives.
    if (hb.renewTime - seen.observedAt > OBSERVATION_MAX_AGE_MS) continue;
    total++;
    if (!seen.reachable) unreachable.push(node);
  }
  return { unreachable, total };
}

/**
 * The spec endpoint as it goes into status: spec edits propagate, plus the switch, the node's key
 * and, on the tunnel endpoint, its standbys' keys (so remote gateways can stage them).
 */
function stamp(c: GatewayEndpoint, type: EndpointType, input: ElectionInput): GatewayEndpoint {
  const publicKey = input.heartbeats.get(c.nodeName)?.health?.publicKey;
  const standbys = type === 'tunnel' ? standbyKeys(c.nodeName, input) : undefined;
  return {
    ...c,
    config: {
      ...(c.config ?? {}),
      [SWITCH[type].key]: 'true',
      ...(type === 'tunnel' && publicKey && { publicKey }),
      ...(standbys && { [STANDBY_KEYS_CONFIG]: standbys }),
    },
  };
}

/**
 * JSON `{node: key}` of the Gateway's other tunnel candidates that are members and have published
 * a key (a lapsed heartbeat still names the key the node will come back with), sorted by node.
 */
function standbyKeys(active: string, input: ElectionInput): string | undefined {
  const gw = input.gateway.metadata.name;
  const nodes = [...new Set((input.gateway.spec?.endpoints ?? []).filter((e) => e.type === 'tunnel' && e.nodeName !== active).map((e) => e.nodeName))].sort();
  const keys: [string, string][] = [];
  for (const node of nodes) {
    const key = input.heartbeats.get(node)?.health?.publicKey;
    if (key && input.memberOf.get(node) === gw) keys.push([node, key]);
  }
  return keys.length ? JSON.stringify(Object.fromEntries(keys)) : undefined;
}

function compare(nodeA: string, typeA: string, nodeB: string, typeB: string): number {
  if (nodeA !== nodeB) return nodeA < nodeB ? -1 : 1;
  return typeA < typeB ? -1 : typeA > typeB ? 1 : 0;
}

function uniqueByNode(endpoints: GatewayEndpoint[]): GatewayEndpoint[] {
  const seen = new Set<string>();
  return endpoints.filter((e) => (seen.has(e.nodeName) ? false : (seen.add(e.nodeName), true)));
}

/*
 * Static stability (docs/0003-controller.md, "Static stability"), after Kubernetes' node lifecycle
 * controller: an expired heartbeat is evidence of a dead gateway only while the controller sees the
 * heartbeats of the rest of the cluster arrive. Two rules hold a failover back:
 * - grace: for `sightGraceMs` after the controller regained sight (its start or leadership, a
 *   reconnect of the Lease watch, heartbeat events resuming after a silence longer than that, the
 *   end of a disruption), as the node lifecycle controller resets its probe times when it regains
 *   sight;
 * - disruption: when a large share of the cluster's candidates missed their renewal together
 *   (`heartbeatDisruption`), like its zone states ("FullDisruption" stops evictions).
 */

/**
 * A heartbeat is overdue once it is older than this many renew periods (a renewal missed, with a
 * quarter period for latency). Overdue, not expired, is what the disruption counts: when the API
 * stops, every heartbeat is overdue before the first has expired.
 */
export const OVERDUE_RENEWALS = 1.25;
/**
 * After regaining sight, how long expired heartbeats are no evidence: one renewal of the slowest
 * candidate, with a quarter period for latency (`OVERDUE_RENEWALS`), so every live agent has
 * written again. From the heartbeats' own leases (`renewPeriodMs`); with none, the contract's.
 */
export function sightGraceMs(heartbeats: Iterable<Heartbeat>): number {
  let lease = 0;
  for (const hb of heartbeats) lease = Math.max(lease, hb.leaseDurationSeconds);
  return OVERDUE_RENEWALS * renewPeriodMs(lease || CANDIDATE_LEASE_SECONDS);
}
/** No heartbeat event from any agent for this long (times the grace) is a gap: the next event regains sight. */
export const HEARTBEAT_GAP_GRACES = 1.2;
/** The cluster's candidates are those whose heartbeat was valid within this many renew periods of the freshest renewal. */
export const MASS_LAPSE_WINDOW_RENEWALS = 5;
/** A disruption: at least this share of the cluster's candidates overdue (the node lifecycle controller's unhealthyZoneThreshold)… */
export const MASS_LAPSE_SHARE = 0.55;
/** …in at least this many regions (Gateways): one region losing its link to the API is that region's fault. */
export const MASS_LAPSE_MIN_REGIONS = 2;

/** A gateway candidate of the cluster: a member node named in its Gateway's endpoints. */
export interface ClusterCandidate {
  readonly node: string;
  readonly gateway: string;
}

export interface Disruption {
  readonly disrupted: boolean;
  /** Candidates counted (with a heartbeat valid within MASS_LAPSE_WINDOW_RENEWALS renew periods of the freshest renewal). */
  readonly candidates: number;
  /** Of those, how many are overdue, and in which Gateways (sorted). */
  readonly overdue: number;
  readonly regions: readonly string[];
  /** One line for logs and events: the counts and the freshest renewal. */
  readonly evidence: string;
}

/**
 * Every member node named in some Gateway's endpoints, once, sorted by node. Tolerant: the
 * controller passes Gateways as cached (not parsed), and a malformed one contributes nothing.
 */
export function clusterCandidates(gateways: readonly Gateway[], memberOf: ReadonlyMap<string, string>): ClusterCandidate[] {
  const out = new Map<string, ClusterCandidate>();
  for (const gw of gateways) {
    const endpoints: unknown = gw?.spec?.endpoints;
    if (!Array.isArray(endpoints)) continue;
    for (const e of endpoints as unknown[]) {
      const node = (e as { nodeName?: unknown } | null)?.nodeName;
      if (typeof node === 'string' && memberOf.get(node) === gw.metadata?.name) out.set(node, { node, gateway: gw.metadata.name });
    }
  }
  return [...out.values()].sort((a, b) => compare(a.node, '', b.node, ''));
}

/** When `hb` is overdue: OVERDUE_RENEWALS of its renew periods after its renewal. */
export function overdueAt(hb: Heartbeat): number {
  return hb.renewTime + OVERDUE_RENEWALS * renewPeriodMs(hb.leaseDurationSeconds);
}

/**
 * Whether the cluster's heartbeats lapsed together. The candidates counted are those whose
 * heartbeat was still valid within MASS_LAPSE_WINDOW_RENEWALS renew periods of the freshest renewal seen (so a node
 * dead for an hour does not count, and after an outage of any length every node alive when the API
 * stopped still does); candidates without any heartbeat are not counted. Disrupted when at least
 * MASS_LAPSE_SHARE of them are overdue, in at least MASS_LAPSE_MIN_REGIONS Gateways.
 */
export function heartbeatDisruption(candidates: readonly ClusterCandidate[], heartbeats: ReadonlyMap<string, Heartbeat>, now: number): Disruption {
  const beats = candidates.flatMap((c) => {
    const hb = heartbeats.get(c.node);
    return hb ? [{ ...c, hb }] : [];
  });
  const freshest = Math.max(...beats.map((b) => b.hb.renewTime));
  const counted = beats.filter((b) => expiresAt(b.hb) >= freshest - MASS_LAPSE_WINDOW_RENEWALS * renewPeriodMs(b.hb.leaseDurationSeconds));
  const overdue = counted.filter((b) => now > overdueAt(b.hb));
  const regions = [...new Set(overdue.map((b) => b.gateway))].sort();
  const disrupted = counted.length > 0 && overdue.length >= MASS_LAPSE_SHARE * counted.length && regions.length >= MASS_LAPSE_MIN_REGIONS;
  const latest = Number.isFinite(freshest) ? `; freshest renewal ${((now - freshest) / 1000).toFixed(1)} s ago` : '';
  const evidence = `${overdue.length}/${counted.length} gateway candidates missed their heartbeat renewal, in ${regions.length} region${regions.length === 1 ? '' : 's'}${regions.length ? ` (${regions.join(', ')})` : ''}${latest}`;
  return { disrupted, candidates: counted.length, overdue: overdue.length, regions, evidence };
}

/** What the controller knows of its own sight of heartbeats, for `holdReason`. */
export interface Sight {
  /** When it last regained sight (start, leadership, watch reconnect, end of a gap or of a disruption). */
  readonly since?: number;
  /** Why, for the log: "caches synced", "heartbeat events resumed after 20.1 s", … */
  readonly why?: string;
  /** How long after `since` expired heartbeats are no evidence (`sightGraceMs`). */
  readonly graceMs: number;
  readonly disruption: Disruption;
}

/** Why an expired heartbeat is no evidence at `now` (ElectionInput.holdExpired), or undefined when it is. */
export function holdReason(sight: Sight, now: number): string | undefined {
  if (sight.disruption.disrupted) return `heartbeat disruption, a control-plane fault rather than gateway faults: ${sight.disruption.evidence}`;
  if (sight.since !== undefined && now < sight.since + sight.graceMs) {
    return `regained sight of heartbeats ${((now - sight.since) / 1000).toFixed(1)} s ago (${sight.why ?? 'unknown'}); waiting ${sight.graceMs / 1000} s for fresh heartbeats`;
  }
  return undefined;
}

export interface ElectionEvent {
  readonly type: 'Normal' | 'Warning';
  readonly reason: 'ActiveEndpointElected' | 'ActiveEndpointLost' | 'PublicKeyChanged' | 'FailoverHeld';
  readonly message: string;
}

/** Every WireGuard key a status publishes, by node: the active endpoint's and its staged standbys'. */
export function publishedKeys(endpoints: readonly GatewayEndpoint[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of endpoints) {
    if (e.type !== 'tunnel') continue;
    try {
      const staged = JSON.parse(e.config?.[STANDBY_KEYS_CONFIG] ?? '{}') as Record<string, unknown>;
      for (const [node, key] of Object.entries(staged)) if (typeof key === 'string') out.set(node, key);
    } catch {
      // unreadable standby keys: nothing to compare
    }
    if (e.config?.publicKey) out.set(e.nodeName, e.config.publicKey);
  }
  return out;
}

/**
 * A Warning for every node whose published WireGuard key differs from the one last published for
 * it (`known`: the controller remembers them across failovers, when a node drops out of status
 * for a while). Honest keys survive restarts (they live on the node's disk), so a change is a
 * reinstalled node, or someone publishing a key of their own for it: operators should know.
 */
export function keyChangeEvents(gateway: string, known: ReadonlyMap<string, string>, after: readonly GatewayEndpoint[]): ElectionEvent[] {
  const events: ElectionEvent[] = [];
  for (const [node, key] of [...publishedKeys(after)].sort(([a], [b]) => (a < b ? -1 : 1))) {
    const old = known.get(node);
    if (old && old !== key) events.push({ type: 'Warning', reason: 'PublicKeyChanged', message: `node ${node} of ${gateway} published a new WireGuard key ${key} (was ${old}); expected only after the node was reinstalled` });
  }
  return events;
}

/** Events for a change of active endpoints (none when nothing changed). */
export function electionEvents(gateway: string, before: readonly GatewayEndpoint[], after: ElectionResult): ElectionEvent[] {
  const key = (e: { nodeName: string; type: string }): string => `${e.type}/${e.nodeName}`;
  const was = new Set(before.map(key));
  const now = new Set(after.active.map(key));
  const events: ElectionEvent[] = [];
  for (const e of before) {
    if (now.has(key(e))) continue;
    const why = after.rejected.find((r) => r.node === e.nodeName && r.type === e.type)?.reason ?? 'no longer a candidate';
    events.push({ type: 'Warning', reason: 'ActiveEndpointLost', message: `${e.type} endpoint ${e.nodeName} of ${gateway} lost: ${why}` });
  }
  for (const e of after.active) {
    if (was.has(key(e))) continue;
    events.push({ type: 'Normal', reason: 'ActiveEndpointElected', message: `node ${e.nodeName} elected active ${e.type} endpoint of ${gateway}${e.publicIP ? `, publicIP ${e.publicIP}` : ''}` });
  }
  return events;
}
