/**
 * The heartbeat contract between agents (writers) and the controller (reader), defined once.
 *
 * Each agent keeps one Lease, `raven-agent-<node>` in the raven namespace. Gateway candidates renew
 * it about every second with a short lease; other nodes renew slowly. The agent's view of its own
 * health rides along in one annotation, as JSON. Everything read from the cluster is parsed
 * tolerantly: a malformed annotation yields `undefined` fields, never an exception.
 */

export const LEASE_PREFIX = 'raven-agent-';
export const HEALTH_ANNOTATION = 'raven-gitops.io/health';
export const HEALTH_VERSION = 1;

/** Renewal periods and lease durations (integer seconds, as Lease requires). */
export const CANDIDATE_RENEW_MS = 1000;
export const CANDIDATE_LEASE_SECONDS = 2;
export const MEMBER_RENEW_MS = 10_000;
export const MEMBER_LEASE_SECONDS = 30;

/** A standby's observation older than this is ignored. */
export const OBSERVATION_MAX_AGE_MS = 2000;

export interface PeerHealth {
  /** Seconds since the last completed handshake with this peer (WireGuard) or SA rekey (IPsec). */
  readonly handshakeAgeSeconds?: number;
  readonly rttMs?: number;
  /** Fraction of probes lost over the last window, 0..1. */
  readonly loss?: number;
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

/** Heartbeat from a Lease, or undefined when the Lease is not a heartbeat or has no renew time. */
export function heartbeatFromLease(lease: LeaseLike): Heartbeat | undefined {
  const node = nodeOfLease(lease.metadata?.name ?? '');
  const renew = lease.spec?.renewTime;
  const renewTime = renew instanceof Date ? renew.getTime() : typeof renew === 'string' ? Date.parse(renew) : NaN;
  if (!node || !Number.isFinite(renewTime)) return undefined;
  const duration = lease.spec?.leaseDurationSeconds;
  const health = parseHealth(lease.metadata?.annotations?.[HEALTH_ANNOTATION]);
  return {
    node,
    renewTime,
    leaseDurationSeconds: typeof duration === 'number' && duration > 0 ? duration : CANDIDATE_LEASE_SECONDS,
    ...(health && { health }),
  };
}

export function expiresAt(hb: Heartbeat): number {
  return hb.renewTime + hb.leaseDurationSeconds * 1000;
}

export function encodeHealth(h: AgentHealth): string {
  return JSON.stringify({ v: HEALTH_VERSION, ...h });
}

/** Tolerant parse: unknown versions or malformed JSON give undefined; bad fields are dropped. */
export function parseHealth(text: string | undefined): AgentHealth | undefined {
  if (!text) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObject(raw) || raw.v !== HEALTH_VERSION || typeof raw.backendUp !== 'boolean') return undefined;
  const peers: Record<string, PeerHealth> = {};
  if (isObject(raw.peers)) {
    for (const [name, p] of Object.entries(raw.peers)) {
      if (!isObject(p)) continue;
      peers[name] = {
        ...(num(p.handshakeAgeSeconds) !== undefined && { handshakeAgeSeconds: num(p.handshakeAgeSeconds)! }),
        ...(num(p.rttMs) !== undefined && { rttMs: num(p.rttMs)! }),
        ...(num(p.loss) !== undefined && { loss: num(p.loss)! }),
      };
    }
  }
  const a = raw.activeGateway;
  const activeGateway: ActiveGatewayObservation | undefined =
    isObject(a) && typeof a.node === 'string' && typeof a.reachable === 'boolean' && typeof a.lanReachable === 'boolean' && num(a.observedAt) !== undefined
      ? { node: a.node, reachable: a.reachable, lanReachable: a.lanReachable, observedAt: num(a.observedAt)!, ...(num(a.rttMs) !== undefined && { rttMs: num(a.rttMs)! }) }
      : undefined;
  return {
    backendUp: raw.backendUp,
    peers,
    ...(activeGateway && { activeGateway }),
    ...(typeof raw.publicKey === 'string' && raw.publicKey && { publicKey: raw.publicKey }),
  };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}
