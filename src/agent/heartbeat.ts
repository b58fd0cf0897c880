/**
 * The agent's side of the heartbeat contract (contract/heartbeat.ts): one Lease per node, renewed a
 * quarter lease apart, and written at once whenever the agent asks (`beatNow`: something the
 * controller fails over on changed). Separate from the agent so that the write-budget benchmark
 * (scripts/bench-writes.ts) runs thousands of these, the code a node runs, without a kernel.
 */
import * as k8s from '@kubernetes/client-node';
import { type AgentHealth, CANDIDATE_LEASE_SECONDS, encodeHealth, HEALTH_ANNOTATION, leaseName, MEMBER_LEASE_SECONDS, renewPeriodMs } from '../contract/heartbeat.js';
import { code } from '../platform/leader-election.js';
import { failure } from './dataplane/errors.js';
import { withDeadline } from '../platform/request-deadline.js';
import { Backoff, type Clock, type Timers } from '../platform/timers.js';

/** A renewal this close to due is sent now rather than armed for later. */
const RENEW_EARLY_MS = 50;

/**
 * A write not answered within half a renew period (5 s for a candidate) is aborted: a request the
 * API server took and never answered must not hold back the writes queued behind it, and half a
 * period leaves the next renewal time to be sent before the lease runs out.
 */
export function writeDeadlineMs(leaseSeconds: number): number {
  return renewPeriodMs(leaseSeconds) / 2;
}

/**
 * A failed write is tried again this much later, then twice as long after each further failure, up
 * to a renew period; a write that succeeds starts over. What failed to be reported (a backend that
 * went down) must not wait a whole period, and an API server that is down is not hammered.
 */
export const RETRY_FIRST_MS = 500;

export interface HeartbeatOptions {
  readonly node: string;
  readonly namespace: string;
  readonly clock: Clock;
  /** The heartbeat loop's slot is `heartbeat`. */
  readonly timers: Timers;
  /** A gateway candidate's lease (`raven agent --lease-seconds`). @default CANDIDATE_LEASE_SECONDS */
  readonly leaseSeconds?: number;
  /** Whether this node is a gateway candidate now (its lease and renew period follow). */
  readonly candidate: () => boolean;
  /** What the next write says, read when it is sent. */
  readonly health: (candidate: boolean) => Promise<AgentHealth>;
  readonly onError: (err: Error) => void;
}

export class HeartbeatWriter {
  private beating?: Promise<void>;
  private again = false;
  private stopped = false;
  /** The Lease as last written (its resourceVersion): a renewal replaces it without reading it first. */
  private lease?: k8s.V1Lease;
  /** When the last write was sent: the next renewal is due a renew period after it, whatever wrote it. */
  private lastWrite?: number;
  /** Set by `last`: the final write's lease. */
  private finalLeaseSeconds?: number;
  /** After a failed write: when the next try is due, and the backoff that spaces the tries. */
  private retryAt?: number;
  private readonly retryBackoff = new Backoff(RETRY_FIRST_MS, renewPeriodMs(MEMBER_LEASE_SECONDS));
  private started = false;
  /** Requests sent to the API, by verb (the benchmark's count; the API server counts too). */
  readonly requests = { replace: 0, read: 0, create: 0 };

  constructor(private readonly coordination: k8s.CoordinationV1Api, private readonly opts: HeartbeatOptions) {}

  /** This node's lease now: a candidate's or a member's. */
  leaseSeconds(candidate = this.opts.candidate()): number {
    const own = this.opts.leaseSeconds ?? CANDIDATE_LEASE_SECONDS;
    return candidate ? own : Math.max(own, MEMBER_LEASE_SECONDS);
  }

  /**
   * Renews a renew period after the last write, whatever sent it: a report written because
   * something changed counts as a renewal. Fixed rate, not fixed delay: a slow renewal must not
   * push the next one toward expiry.
   */
  start(): void {
    this.started = true;
    void this.tick();
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const period = renewPeriodMs(this.leaseSeconds());
    if (this.due(period) <= RENEW_EARLY_MS) await this.beatNow();
    this.arm(period);
  }

  /** Milliseconds until the next write is due: a retry after a failure, else a renewal. */
  private due(period: number): number {
    const now = this.opts.clock.now();
    if (this.retryAt !== undefined) return this.retryAt - now;
    return this.lastWrite === undefined ? 0 : this.lastWrite + period - now;
  }

  private arm(period = renewPeriodMs(this.leaseSeconds())): void {
    if (this.started && !this.stopped) this.opts.timers.set('heartbeat', Math.max(this.due(period), RENEW_EARLY_MS), () => void this.tick());
  }

  /** One write at a time (the Lease is replaced whole): one asked for while one is in flight runs right after it. */
  beatNow(): Promise<void> {
    if (this.beating) {
      this.again = true;
      return this.beating;
    }
    this.beating = this.write()
      .then(
        () => {
          this.retryAt = undefined;
          this.retryBackoff.reset();
        },
        (err: unknown) => {
          const period = renewPeriodMs(this.leaseSeconds());
          this.retryAt = this.opts.clock.now() + Math.min(this.retryBackoff.next(), period);
          this.opts.onError(err as Error);
          this.arm(period);
        },
      )
      .finally(() => {
        this.beating = undefined;
        if (this.again && !this.stopped) {
          this.again = false;
          void this.beatNow();
        }
      });
    return this.beating;
  }

  /**
   * Stops the loop and writes once more, after any write in flight, with at least `leaseSeconds`
   * (a restart: the next agent starts before the controller would take the gateway away); waits at
   * most `timeoutMs` for it, since the API may be what is down. Whether it was written.
   */
  async last(leaseSeconds: number, timeoutMs: number): Promise<boolean> {
    this.stopped = true;
    this.finalLeaseSeconds = Math.max(leaseSeconds, this.leaseSeconds(true));
    const written = (this.beating ?? Promise.resolve()).then(() => this.write(true)).then(
      () => true,
      (err: unknown) => (this.opts.onError(err as Error), false),
    );
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    // The timer goes once the write is done: it must not hold a stopping process for its length.
    return Promise.race([written, timedOut]).finally(() => clearTimeout(timer));
  }

  stop(): void {
    this.stopped = true;
  }

  /** The lease written last (for logs). */
  get finalLease(): number | undefined {
    return this.finalLeaseSeconds;
  }

  private async write(asCandidate?: boolean): Promise<void> {
    const candidate = asCandidate ?? this.opts.candidate();
    const health = encodeHealth(await this.opts.health(candidate));
    const name = leaseName(this.opts.node);
    const deadline = writeDeadlineMs(this.finalLeaseSeconds ?? this.leaseSeconds(candidate));
    await withDeadline(this.opts.clock, deadline, `renew lease ${this.opts.namespace}/${name}`, (options) => this.send(name, candidate, health, options));
  }

  private async send(name: string, candidate: boolean, health: string, options: k8s.ConfigurationOptions): Promise<void> {
    const namespace = this.opts.namespace;
    // The renewal time is taken when the write is sent, not when the renewal began: a read held by
    // a paused API server would otherwise write a time from before the pause, already expired,
    // and fail a healthy gateway over once the pause ends.
    const body = (base: k8s.V1Lease): k8s.V1Lease => {
      this.lastWrite = this.opts.clock.now();
      const spec: k8s.V1LeaseSpec = { holderIdentity: this.opts.node, leaseDurationSeconds: this.finalLeaseSeconds ?? this.leaseSeconds(candidate), renewTime: new k8s.V1MicroTime() };
      return { ...base, metadata: { ...base.metadata, annotations: { ...(base.metadata?.annotations ?? {}), [HEALTH_ANNOTATION]: health } }, spec: { ...base.spec, ...spec } };
    };
    // One request per renewal: the Lease as we last wrote it is replaced; only when someone else
    // wrote it since (409) or it is gone (404) is it read again.
    if (this.lease) {
      try {
        this.requests.replace++;
        this.lease = await this.coordination.replaceNamespacedLease({ name, namespace, body: body(this.lease) }, options);
        return;
      } catch (err) {
        this.lease = undefined;
        if (code(err) !== 409 && code(err) !== 404) throw failure(`renew lease ${namespace}/${name}`, err);
      }
    }
    try {
      this.requests.read++;
      const lease = await this.coordination.readNamespacedLease({ name, namespace }, options);
      this.requests.replace++;
      this.lease = await this.coordination.replaceNamespacedLease({ name, namespace, body: body(lease) }, options);
    } catch (err) {
      if (code(err) !== 404) throw failure(`renew lease ${namespace}/${name}`, err);
      this.requests.create++;
      this.lease = await this.coordination.createNamespacedLease({ namespace, body: body({ metadata: { name, namespace } }) }, options).catch((e: unknown) => {
        throw failure(`create lease ${namespace}/${name}`, e);
      });
    }
  }
}
