/**
 * The heartbeat contract between agents (writers) and the controller (reader), defined once.
 *
 * Each agent keeps one Lease, `raven-agent-<node>` in the raven namespace, renewed a quarter of its
 * lease duration apart, kubelet's own node Lease rate for candidates (10 s of 40 s). Speed does not
 * come from renewing often: everything the controller fails over on is written the moment it
 * changes (a backend down, a peer lost or reached through the tunnel, a standby losing its active),
 * and a renewal only says "nothing changed, I am alive". The agent's view of its own health rides
 * along in one annotation, as JSON. Everything read from the cluster is parsed tolerantly: a
 * malformed annotation yields `undefined` fields, never an exception.
 */

import { isObject, isWireGuardKey, objectName, shown } from '../platform/canonical.js';

export const LEASE_PREFIX = 'raven-agent-';
export const HEALTH_ANNOTATION = 'raven-gitops.io/health';
export const HEALTH_VERSION = 1;

/**
 * Renewals per lease duration: an agent renews every `lease / RENEWALS_PER_LEASE`, so the
 * controller knows any heartbeat's renew period from its lease alone (`renewPeriodMs`), whatever
 * the agent was started with (`raven agent --lease-seconds`).
 */
export const RENEWALS_PER_LEASE = 4;
/** Lease durations (integer seconds, as Lease requires) and the renew periods they imply. */
export const CANDIDATE_LEASE_SECONDS = 40;
export const CANDIDATE_RENEW_MS = (CANDIDATE_LEASE_SECONDS * 1000) / RENEWALS_PER_LEASE;
/** Members carry no evidence the controller waits for: they renew slowly. */
export const MEMBER_LEASE_SECONDS = 120;
export const MEMBER_RENEW_MS = (MEMBER_LEASE_SECONDS * 1000) / RENEWALS_PER_LEASE;

/** How often a heartbeat with this lease is renewed. */
export function renewPeriodMs(leaseDurationSeconds: number): number {
  return (leaseDurationSeconds * 1000) / RENEWALS_PER_LEASE;
}

/**
 * An agent that stops and leaves its data plane to the next one (a restart, a rolling update)
 * renews once with at least this lease, so that the next agent has time to start before the
 * controller takes the gateway away for a lapsed heartbeat. Evidence still fails it over at once
 * meanwhile: standbys that lose it, remote regions that lose it through the tunnel.
 */
export const RESTART_LEASE_SECONDS = 15;

/**
 * A standby's observation older than this when its heartbeat was written is ignored. It is written
 * when it changes, so one that was fresh when written stands for as long as the heartbeat lives.
 */
export const OBSERVATION_MAX_AGE_MS = 2000;
/**
 * How far ahead of the controller's clock a node's clock may be. A renewal or observation stamped
 * further in the future is refused: otherwise one forged timestamp would keep a dead node "alive"
 * (or its report "fresh") for as long as the forger liked.
 */
export const MAX_CLOCK_SKEW_MS = 2000;
/** The longest lease a heartbeat may claim; longer ones are cut to this (a member's). */
export const MAX_LEASE_SECONDS = MEMBER_LEASE_SECONDS;
/** A health annotation larger than this is not read (honest ones are well under 1 KiB per peer). */
export const MAX_HEALTH_BYTES = 256 * 1024;
/** Peers in one health report beyond this are not read (a hub has about one per region). */
export const MAX_HEALTH_PEERS = 10_000;

/**
 * Tunnel probes (data-path health): gateways, and warm standbys through their warm tunnels, ping
 * each remote gateway's probe address this often, each ping waiting at most the timeout.
 */
export const TUNNEL_PROBE_PERIOD_MS = 100;
export const TUNNEL_PROBE_TIMEOUT_MS = 150;
/**
 * A peer is lost after LOST_PROBES probes in a row went unanswered (a lost ping or two on a busy
 * node or a lossy link is noise), and reached after REACHED_PROBES in a row were answered: a
 * whole probe window, clean. The agent writes its heartbeat when a peer becomes lost or reached or
 * stops being either; the controller counts a lost peer as evidence against the gateway probed,
 * and only a reached one as proof that a witness sees clearly (another region) or that a standby
 * would do better. The asymmetry is the point: when an active gateway's own uplink fails, its
 * standby's record stays clean, so demanding ten clean answers costs no time; when the witness's
 * link is the lossy one (measured: 20 % each way made a single witness fail hangzhou over three
 * times a minute with three-and-three), nothing it sees is clean, and nothing moves.
 *
 * Gateways probe the remote standbys they stage too (their probe address is the staged peer's one
 * allowed IP), and report them inside the peer: one report, one moment, says both "I lost your
 * active" and "I reach your standby", so a verdict never mixes a fresh loss with an old success.
 */
/** Standbys reported per peer beyond this are not read (a region has a handful of candidates). */
export const MAX_STANDBY_REPORTS = 16;

/** A gateway's probes of one remote standby, through the session staged for it. */
export interface StandbyProbes {
  readonly lostProbes?: number;
  readonly answeredProbes?: number;
}
export const LOST_PROBES = 3;
/** The probe window (agent/probes.ts PROBE_WINDOW): every probe in it answered. */
export const REACHED_PROBES = 10;

export interface PeerHealth {
  /** The remote gateway node the probes went to (the remote region's active, when we probed). */
  readonly node?: string;
  /** Seconds since the last completed handshake with this peer (WireGuard) or SA rekey (IPsec). */
  readonly handshakeAgeSeconds?: number;
  readonly rttMs?: number;
  /** Fraction of probes lost over the last window, 0..1. */
  readonly loss?: number;
  /** Probes unanswered in a row, up to the latest (0: the latest was answered). */
  readonly lostProbes?: number;
  /** Probes answered in a row, up to the latest (0: the latest was lost). */
  readonly answeredProbes?: number;
  /** Milliseconds from the first of those unanswered probes to the report. */
  readonly lostForMs?: number;
  /** The peer's region's standbys we stage and probe, by node. */
  readonly standbys?: Readonly<Record<string, StandbyProbes>>;
}

/** Whether a report says the peer is lost (`LOST_PROBES` in a row unanswered). */
export function isLost(p: StandbyProbes | undefined): boolean {
  return (p?.lostProbes ?? 0) >= LOST_PROBES;
}

/** Whether a report says the peer answers (`REACHED_PROBES` in a row answered). */
export function isReached(p: StandbyProbes | undefined): boolean {
  return (p?.answeredProbes ?? 0) >= REACHED_PROBES;
}

/** What a standby candidate sees of its region's active gateway. */
export interface ActiveGatewayObservation {
  /** The node the standby believes is active. */
  readonly node: string;
  readonly reachable: boolean;
  /**
   * Whether, in the same probe round, the standby reached another member of its region (or its LAN
   * router). A standby that reaches nothing is the one cut off: its "unreachable" proves nothing.
   */
  readonly lanReachable: boolean;
  readonly rttMs?: number;
  /** Milliseconds since the epoch. */
  readonly observedAt: number;
}

export interface AgentHealth {
  /** The tunnel backend (WireGuard device / charon) is up and configured. */
  readonly backendUp: boolean;
  /** Per remote gateway name. */
  readonly peers: Readonly<Record<string, PeerHealth>>;
  readonly activeGateway?: ActiveGatewayObservation;
  /** This node's WireGuard public key, for the controller to publish in Gateway status. */
  readonly publicKey?: string;
}

export interface Heartbeat {
  readonly node: string;
  /** Milliseconds since the epoch. */
  readonly renewTime: number;
  readonly leaseDurationSeconds: number;
  readonly health?: AgentHealth;
}

/** The parts of a coordination.k8s.io/v1 Lease we read. */
export interface LeaseLike {
  readonly metadata?: { readonly name?: string; readonly annotations?: Readonly<Record<string, string>> };
  readonly spec?: { readonly holderIdentity?: string; readonly renewTime?: string | Date; readonly leaseDurationSeconds?: number };
}

export function leaseName(node: string): string {
  return `${LEASE_PREFIX}${node}`;
}

export function nodeOfLease(name: string): string | undefined {
  return name.startsWith(LEASE_PREFIX) && name.length > LEASE_PREFIX.length ? name.slice(LEASE_PREFIX.length) : undefined;
}

/** Heartbeat from a Lease, or undefined when the Lease is not a valid heartbeat (see `parseHeartbeat`). */
export function heartbeatFromLease(lease: LeaseLike, now = Date.now()): Heartbeat | undefined {
  return parseHeartbeat(lease, now).heartbeat;
}

/**
 * A heartbeat from a Lease, read as written by someone who may not be the node it names: on
 * clusters without the admission policy (Kubernetes < 1.30), any agent can write any Lease.
 * - the holder must be the node the Lease is named after;
 * - a renewal stamped in the future (beyond `MAX_CLOCK_SKEW_MS`) is refused, one slightly ahead is
 *   taken as renewed now;
 * - the lease duration is cut to 1..`MAX_LEASE_SECONDS`;
 * - health is parsed field by field (`parseHealth`), including the key's format.
 * `refused` says why a Lease named like a heartbeat gave none; it is absent for other Leases.
 */
export function parseHeartbeat(lease: LeaseLike, now: number): { heartbeat?: Heartbeat; refused?: string } {
  const node = nodeOfLease(lease.metadata?.name ?? '');
  if (!node) return {};
  if (!objectName(node).ok) return { refused: `${shown(node)} is not a node name` };
  const holder = lease.spec?.holderIdentity;
  if (holder !== node) return { refused: `holder ${shown(holder ?? '')} is not the node ${node}` };
  const renew = lease.spec?.renewTime;
  const stamped = renew instanceof Date ? renew.getTime() : typeof renew === 'string' ? Date.parse(renew) : NaN;
  if (!Number.isFinite(stamped)) return { refused: 'no renew time' };
  if (stamped > now + MAX_CLOCK_SKEW_MS) return { refused: `renew time ${new Date(stamped).toISOString()} is ${((stamped - now) / 1000).toFixed(1)} s in the future` };
  const duration = lease.spec?.leaseDurationSeconds;
  const leaseDurationSeconds = typeof duration === 'number' && Number.isFinite(duration) && duration >= 1 ? Math.min(Math.floor(duration), MAX_LEASE_SECONDS) : CANDIDATE_LEASE_SECONDS;
  const health = parseHealth(lease.metadata?.annotations?.[HEALTH_ANNOTATION], now);
  return { heartbeat: { node, renewTime: Math.min(stamped, now), leaseDurationSeconds, ...(health && { health }) } };
}

export function expiresAt(hb: Heartbeat): number {
  return hb.renewTime + hb.leaseDurationSeconds * 1000;
}

export function encodeHealth(h: AgentHealth): string {
  return JSON.stringify({ v: HEALTH_VERSION, ...h });
}

/**
 * Tolerant parse: unknown versions, malformed or oversized JSON give undefined; bad fields are
 * dropped: peers that are not Gateway names, numbers out of range, an observation of a node that
 * is no node name or stamped in the future, a key that is not a WireGuard key.
 */
export function parseHealth(text: string | undefined, now = Date.now()): AgentHealth | undefined {
  if (!text || text.length > MAX_HEALTH_BYTES) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(raw) || raw.v !== HEALTH_VERSION || typeof raw.backendUp !== 'boolean') return undefined;
  const peers: Record<string, PeerHealth> = {};
  if (isObject(raw.peers)) {
    for (const [name, p] of Object.entries(raw.peers).slice(0, MAX_HEALTH_PEERS)) {
      if (!isObject(p) || !objectName(name).ok) continue;
      const age = num(p.handshakeAgeSeconds, 0);
      const rtt = num(p.rttMs, 0);
      const loss = num(p.loss, 0, 1);
      const lostForMs = num(p.lostForMs, 0);
      const standbys: Record<string, StandbyProbes> = {};
      if (isObject(p.standbys)) {
        for (const [node, sp] of Object.entries(p.standbys).slice(0, MAX_STANDBY_REPORTS)) if (isObject(sp) && objectName(node).ok) standbys[node] = runs(sp);
      }
      peers[name] = {
        ...(objectName(p.node).ok && { node: p.node as string }),
        ...(age !== undefined && { handshakeAgeSeconds: age }),
        ...(rtt !== undefined && { rttMs: rtt }),
        ...(loss !== undefined && { loss }),
        ...runs(p),
        ...(lostForMs !== undefined && { lostForMs }),
        ...(Object.keys(standbys).length > 0 && { standbys }),
      };
    }
  }
  const a = raw.activeGateway;
  const observedAt = isObject(a) ? num(a.observedAt, 0, now + MAX_CLOCK_SKEW_MS) : undefined;
  const rtt = isObject(a) ? num(a.rttMs, 0) : undefined;
  const activeGateway: ActiveGatewayObservation | undefined =
    isObject(a) && objectName(a.node).ok && typeof a.reachable === 'boolean' && typeof a.lanReachable === 'boolean' && observedAt !== undefined
      ? { node: a.node as string, reachable: a.reachable, lanReachable: a.lanReachable, observedAt: Math.min(observedAt, now), ...(rtt !== undefined && { rttMs: rtt }) }
      : undefined;
  return {
    backendUp: raw.backendUp,
    peers,
    ...(activeGateway && { activeGateway }),
    ...(isWireGuardKey(raw.publicKey) && { publicKey: raw.publicKey }),
  };
}

/** The runs of lost and answered probes, when they are counts. */
function runs(p: Record<string, unknown>): StandbyProbes {
  const count = (v: unknown): number | undefined => (Number.isInteger(v) && (v as number) >= 0 ? (v as number) : undefined);
  const lostProbes = count(p.lostProbes);
  const answeredProbes = count(p.answeredProbes);
  return { ...(lostProbes !== undefined && { lostProbes }), ...(answeredProbes !== undefined && { answeredProbes }) };
}

function num(v: unknown, min = -Infinity, max = Infinity): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max ? v : undefined;
}
