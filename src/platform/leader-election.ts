/**
 * Lease-based leader election (coordination.k8s.io/v1), which @kubernetes/client-node lacks.
 * Optimistic concurrency on the Lease's resourceVersion decides races: a 409 means another
 * replica won. A leader that cannot renew within the lease duration steps down.
 *
 * As in client-go, a held Lease expires by this replica's own clock and its own configured
 * duration: the lease is taken over once its record (holder, renew time) has not changed for
 * `leaseDurationSeconds` since we first saw it. The duration and renew time written in the Lease
 * are not trusted, so a forged holder with a ten-year lease or a renew time in the future stops
 * nobody for longer than one lease duration past its last change.
 *
 * A leader steps down when it has not renewed for `RENEW_DEADLINE` of the lease duration (client-go's
 * 10 s of 15 s), and each attempt's requests are aborted after a retry period: a renewal the API
 * server never answers cannot keep a replica leading past the moment another may take over.
 */
import * as k8s from '@kubernetes/client-node';
import { withDeadline } from './request-deadline.js';
import { systemClock } from './timers.js';

/** The share of the lease duration a leader may go without renewing before it steps down. */
export const RENEW_DEADLINE = 2 / 3;

export interface LeaderElectionOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  readonly leaseDurationSeconds: number;
  /** How often the leader renews and candidates retry. */
  readonly retryPeriodMs: number;
  readonly onStartedLeading: () => void;
  readonly onStoppedLeading: () => void;
  readonly log: (msg: string) => void;
  readonly now?: () => number;
}

export class LeaderElector {
  private readonly api: k8s.CoordinationV1Api;
  private timer: NodeJS.Timeout | undefined;
  private leading = false;
  private lastRenew = 0;
  private stopped = false;
  /** The other holder's record as last read, and when (our clock) it last changed. */
  private observed?: { record: string; at: number };

  constructor(kc: k8s.KubeConfig, private readonly opts: LeaderElectionOptions) {
    this.api = kc.makeApiClient(k8s.CoordinationV1Api);
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    const tick = async (): Promise<void> => {
      if (this.stopped) return;
      const now = this.now();
      let ok = false;
      try {
        ok = await withDeadline(systemClock, this.opts.retryPeriodMs, `lease ${this.opts.namespace}/${this.opts.name}`, (options) => this.tryAcquireOrRenew(now, options));
      } catch (err) {
        this.opts.log(`failed to acquire or renew lease ${this.opts.namespace}/${this.opts.name}: ${(err as Error).message}`);
      }
      if (this.stopped) return;
      if (ok) {
        this.lastRenew = now;
        if (!this.leading) {
          this.leading = true;
          this.opts.log(`became leader as ${this.opts.identity}`);
          this.opts.onStartedLeading();
        }
      } else if (this.leading && this.now() - this.lastRenew > this.opts.leaseDurationSeconds * 1000 * RENEW_DEADLINE) {
        this.leading = false;
        this.opts.log('lost leadership: could not renew within the renew deadline');
        this.opts.onStoppedLeading();
      }
      this.timer = setTimeout(() => void tick(), this.opts.retryPeriodMs);
    };
    void tick();
  }

  /** Stops renewing; a leader gives the lease up so a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    try {
      // Bounded like a renewal: a stopping process must not wait on an API server that is gone.
      await withDeadline(systemClock, this.opts.retryPeriodMs, `release lease ${this.opts.namespace}/${this.opts.name}`, async (options) => {
        const lease = await this.api.readNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace }, options);
        if (lease.spec?.holderIdentity !== this.opts.identity) return;
        lease.spec.holderIdentity = undefined as unknown as string;
        lease.spec.renewTime = new k8s.V1MicroTime(0);
        await this.api.replaceNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace, body: lease }, options);
      });
    } catch {
      // Best effort: the lease expires on its own.
    }
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  private async tryAcquireOrRenew(now: number, options: k8s.ConfigurationOptions): Promise<boolean> {
    const { namespace, name, identity, leaseDurationSeconds } = this.opts;
    const stamp = new k8s.V1MicroTime(now);
    let lease: k8s.V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace }, options);
    } catch (err) {
      if (code(err) !== 404) throw err;
      try {
        await this.api.createNamespacedLease({
          namespace,
          body: { metadata: { name, namespace }, spec: { holderIdentity: identity, leaseDurationSeconds, acquireTime: stamp, renewTime: stamp, leaseTransitions: 0 } },
        }, options);
        return true;
      } catch (e) {
        if (code(e) === 409) return false;
        throw e;
      }
    }
    const spec = lease.spec ?? {};
    const held = spec.holderIdentity && spec.holderIdentity !== identity;
    if (held) {
      const record = JSON.stringify([spec.holderIdentity, spec.renewTime ? new Date(spec.renewTime).toISOString() : '', spec.acquireTime ? new Date(spec.acquireTime).toISOString() : '']);
      if (this.observed?.record !== record) this.observed = { record, at: now };
      if (this.observed.at + leaseDurationSeconds * 1000 > now) return false;
    }
    const mine = spec.holderIdentity === identity;
    lease.spec = {
      ...spec,
      holderIdentity: identity,
      leaseDurationSeconds,
      renewTime: stamp,
      acquireTime: mine && spec.acquireTime ? spec.acquireTime : stamp,
      leaseTransitions: (spec.leaseTransitions ?? 0) + (mine ? 0 : 1),
    };
    try {
      await this.api.replaceNamespacedLease({ name, namespace, body: lease }, options);
      return true;
    } catch (err) {
      if (code(err) === 409) return false;
      throw err;
    }
  }
}

export function code(err: unknown): number | undefined {
  const c = (err as { code?: unknown }).code;
  return typeof c === 'number' ? c : undefined;
}
