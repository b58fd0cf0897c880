/**
 * The node agent process: watches Gateways, turns them into this node's plan, applies it to the
 * kernel (routes; the tunnel: WireGuard or IPsec), and keeps its heartbeat Lease fresh with its
 * health, its public key and what it sees: on gateways, every tunnel peer (handshake age, probe RTT
 * and loss); on standbys, the active gateway. A sync is level-based: every trigger recomputes the
 * whole plan and the executors apply only differences.
 */
import * as k8s from '@kubernetes/client-node';
import { GATEWAY_GROUP, GATEWAY_VERSION } from '../contract/names.js';
import { type Dropped, shown } from '../platform/canonical.js';
import { Refusals } from '../platform/refusals.js';
import type { Gateway } from '../contract/gateway.js';
import { type ActiveGatewayObservation, type AgentHealth, LOST_PROBES, REACHED_PROBES, RESTART_LEASE_SECONDS, type PeerHealth, type StandbyProbes, TUNNEL_PROBE_PERIOD_MS, TUNNEL_PROBE_TIMEOUT_MS } from '../contract/heartbeat.js';
import { serveEndpoints } from '../platform/http-endpoints.js';
import type { Logger } from '../platform/log.js';
import { Counter, Gauge, Registry, registerProcessMetrics } from '../platform/metrics.js';
import { Backoff, type Clock, DueTimes, systemClock, Timers } from '../platform/timers.js';
import type { CommandRunner } from '../platform/command-runner.js';
import type { AgentConfig } from '../contract/agent-config.js';
import { effectiveMTU, plan, type NodePlan, type StagedPeer } from './plan.js';
import { parsePingRtt, type ProbeStats, ProbeWindow, roundRobin } from './probes.js';
import { DEFAULT_ROUTE_TABLE, describeRoute, RouteTable } from './dataplane/route-table.js';
import { failure } from './dataplane/errors.js';
import { HeartbeatWriter } from './heartbeat.js';
import { proxyConfigFor, ProxyRunner } from './proxy-role.js';
import { makeTunnel, type Tunnel } from './dataplane/tunnel.js';
import type { StaleSession } from './dataplane/wireguard.js';

/**
 * Standby probes of the active gateway: often enough to report a dead gateway well inside a second.
 * A lost probe is retried at once, and only two losses in a row count: one dropped ping on a busy
 * node must not move the gateway.
 */
export const PROBE_PERIOD_MS = 250;
export const PROBE_TIMEOUT_MS = 200;
/**
 * Gateways and warm standbys probe their tunnel peers every TUNNEL_PROBE_PERIOD_MS (the contract's:
 * the controller reads the results), at most this many per round (round-robin): 20 pings a second.
 */
export const TUNNEL_PROBES_PER_ROUND = 2;
/**
 * After a peer change, peers we dial that have not answered since are re-initiated at these delays:
 * early and often, since the gateway we dial may need a few hundred ms to come up.
 */
export const NUDGE_DELAYS_MS = [150, 400, 800, 1500, 2500];
/**
 * Nudges due closer together than this are one nudge (it re-initiates every peer still silent, so
 * it serves every change before it): however often peers change, at most 26 are pending.
 */
export const NUDGE_SPACING_MS = 100;
/**
 * After a failed sync the next is tried this much later, then twice as long after each further
 * failure up to `SYNC_RETRY_MAX_MS` (1, 2, 4, 8, 16, 30, 30 s ...); a sync that succeeds starts over.
 * An event still triggers a sync at once.
 */
export const SYNC_RETRY_MS = 1000;
export const SYNC_RETRY_MAX_MS = 30_000;
/**
 * The last plan applied is applied again this often: the executors read the kernel and write only
 * what differs, so this restores routes, rules, addresses and peers someone else removed.
 */
export const REPAIR_PERIOD_MS = 10_000;
/**
 * A tunnel daemon that exits is started again at once; one that exits again within this long of
 * its last exit waits 1, 2, 4 ... 30 s first (the sync retry's steps), so a daemon that cannot run
 * does not restart in a tight loop. A daemon that ran this long starts over at once.
 */
export const BACKEND_STABLE_MS = 60_000;
/** How long `release` waits for its last renewal before it exits anyway. */
export const RELEASE_RENEW_TIMEOUT_MS = 1000;
/** What a repair can restore, pre-initialised in `raven_agent_repairs_total`. */
export const REPAIR_KINDS = ['backend', 'address', 'peer', 'route', 'rule'] as const;
export type RepairKind = (typeof REPAIR_KINDS)[number];
/** One thing `applyPlan` wrote to the kernel: `what` names it ("added route 10.1.0.0/16 via 192.168.1.1"). */
export interface Write {
  readonly kind: RepairKind;
  readonly what: string;
}
/** Kinds of refused values, pre-initialised in `raven_agent_refused_values` so dashboards see zeros. */
const REFUSAL_KINDS = ['gateway-name', 'endpoint', 'node', 'node-ip', 'subnet', 'subnet-conflict', 'public-ip', 'port', 'public-key', 'peer', 'route'];
/** How often the tunnel backend is checked (its device there, its daemon alive) besides the daemon's exit being watched. */
export const BACKEND_CHECK_PERIOD_MS = 1000;
/**
 * An active peer we dial that has answered no probe for this long, and made no handshake since, gets
 * a new session (`Tunnel.renewStale`): its gateway's tunnel daemon may have restarted, and WireGuard
 * itself waits 15 s. Long enough that random loss (20 % each way) does not cost a working session;
 * a staged standby is renewed as soon as it is lost, since nothing flows to it.
 */
export const ACTIVE_STALE_MS = 2000;
/** Backends that give up on a peer (IPsec) are nudged this often, by the clock (probe rounds slow down while peers fail). */
export const MAINTENANCE_PERIOD_MS = 5000;

/** Whether a plan needs the tunnel: a gateway, or a warm standby (WireGuard) with its would-be peers. */
export function needsTunnel(p: NodePlan): boolean {
  return p.role === 'gateway' || p.peers.length > 0;
}

/**
 * Whether a plan's node probes (and reports) tunnel peers: a gateway. A warm standby only answers
 * probes (its probe address and host routes to its would-be peers' are in its plan): the remote
 * gateways that stage it report what they reach of it, in the same report as their active peer.
 */
function probesPeers(p: NodePlan): boolean {
  return p.role === 'gateway';
}

/** The probe window's key for a staged remote standby ('/' is in no Gateway or node name). */
function stagedKey(s: StagedPeer): string {
  return `${s.gateway}/${s.node}`;
}

/** The `standbys` of a peer's health: each staged standby of its region that was probed. */
function standbyProbes(staged: readonly StagedPeer[], stats: (s: StagedPeer) => ProbeStats | undefined): Pick<PeerHealth, 'standbys'> {
  const out: Record<string, StandbyProbes> = {};
  for (const s of staged) {
    const st = stats(s);
    if (st?.node === s.node) out[s.node] = { lostProbes: st.lostProbes, answeredProbes: st.answeredProbes };
  }
  return Object.keys(out).length ? { standbys: out } : {};
}

/**
 * Puts a plan into the kernel: on a gateway the tunnel (up, with its probe address and peers), on
 * a warm standby the tunnel without routes into it, elsewhere no tunnel of ours; then the routes.
 * Idempotent; returns the gateways whose peers changed and everything it wrote (nothing when the
 * kernel already matched the plan).
 */
export async function applyPlan(next: NodePlan, tunnel: Tunnel, routes: RouteTable): Promise<{ changed: string[]; refused: Dropped[]; writes: Write[] }> {
  const writes: Write[] = [];
  let changed: string[] = [];
  // A warm standby (WireGuard) keeps a tunnel with its would-be peers; routes decide who carries traffic.
  if (needsTunnel(next)) {
    const t = await tunnel.set(next);
    changed = t.peers;
    if (t.started) writes.push({ kind: 'backend', what: `started the ${tunnel.kind} backend` });
    writes.push(
      ...t.addresses.added.map((a) => ({ kind: 'address' as const, what: `added address ${a}` })),
      ...t.addresses.removed.map((a) => ({ kind: 'address' as const, what: `removed address ${a}` })),
      ...t.peers.map((g) => ({ kind: 'peer' as const, what: `set peer ${g}` })),
      ...t.staged.map((g) => ({ kind: 'peer' as const, what: `set staged peer ${g}` })),
      ...t.removed.map((k) => ({ kind: 'peer' as const, what: `removed peer ${k}` })),
    );
  } else if (await tunnel.running()) {
    await tunnel.cleanUp();
    writes.push({ kind: 'backend', what: `stopped the ${tunnel.kind} backend` });
  }
  const diff = await routes.set(next.routes);
  writes.push(
    ...diff.rulesAdded.map((f) => ({ kind: 'rule' as const, what: `added the ${f === '-4' ? 'IPv4' : 'IPv6'} rule` })),
    ...diff.add.map((r) => ({ kind: 'route' as const, what: `added route ${describeRoute(r)}` })),
    ...diff.change.map((r) => ({ kind: 'route' as const, what: `changed route ${describeRoute(r)}` })),
    ...diff.remove.map((dst) => ({ kind: 'route' as const, what: `removed route ${dst}` })),
  );
  return { changed, refused: diff.refused.map((r) => ({ source: 'route', kind: 'route', reason: `${shown(r.route.dst)}: ${r.reason}` })), writes };
}

export interface AgentOptions {
  /** Time for every loop, the heartbeat's rate and observation stamps. @default systemClock */
  readonly clock?: Clock;
  /** How often the last plan is applied again (the repair pass). @default REPAIR_PERIOD_MS */
  readonly repairPeriodMs?: number;
}

export class Agent {
  readonly registry = new Registry();
  private readonly syncs = this.registry.register(new Counter('raven_agent_sync_total', 'Plan applications by result.'));
  private readonly routesGauge = this.registry.register(new Gauge('raven_agent_routes', 'Routes in the agent\'s table.'));
  private readonly peersGauge = this.registry.register(new Gauge('raven_agent_tunnel_peers', 'Tunnel peers on this node.'));
  private readonly handshakeAge = this.registry.register(new Gauge('raven_agent_peer_handshake_age_seconds', 'Seconds since the last handshake, per remote gateway.'));
  private readonly peerRtt = this.registry.register(new Gauge('raven_agent_peer_rtt_seconds', 'Latest probe round trip through the tunnel, per remote gateway.'));
  private readonly peerLoss = this.registry.register(new Gauge('raven_agent_peer_probe_loss_ratio', 'Share of the last 10 tunnel probes lost, per remote gateway.'));
  private readonly activeReachable = this.registry.register(new Gauge('raven_agent_active_gateway_reachable', 'On standbys: 1 when the active gateway answers probes.'));
  private readonly repairs = this.registry.register(new Counter('raven_agent_repairs_total', 'Things the repair pass restored (the kernel differed from the plan applied), by kind.'));
  private readonly refusals: Refusals;

  private readonly routes: RouteTable;
  private readonly tunnel: Tunnel;
  private readonly proxy: ProxyRunner;
  private readonly probes = new ProbeWindow();
  private readonly heartbeat: HeartbeatWriter;
  private probeCursor = 0;
  private lastMaintenance = 0;
  private gatewayCache?: { ip: string | undefined; at: number };
  private holding = false;
  private informer?: k8s.Informer<k8s.KubernetesObject> & k8s.ObjectCache<k8s.KubernetesObject>;
  private current: NodePlan = { role: 'outside', routes: [], peers: [], staged: [], mtu: 0 };
  /** The last sync applied its plan (or deliberately kept the tunnel: `holding`). */
  private synced = false;
  /** Why the tunnel the plan needs is not up, from the last check (`checkBackend`); null when it is. */
  private backendProblem: string | null = null;
  private readonly retryBackoff = new Backoff(SYNC_RETRY_MS, SYNC_RETRY_MAX_MS);
  /** Restarts of a tunnel daemon that keeps exiting (`BACKEND_STABLE_MS`). */
  private readonly restartBackoff = new Backoff(SYNC_RETRY_MS, SYNC_RETRY_MAX_MS);
  private lastBackendExit?: number;
  /** What the last renewal said of the backend (`reportIfChanged`). */
  private reportedUp?: boolean;
  /** The backend went down and no renewal has said so yet: the next one says down, even if it is back. */
  private downUnreported = false;
  private readonly repairPeriodMs: number;
  private observation?: ActiveGatewayObservation;
  private syncing?: Promise<void>;
  private again = false;
  private stopped = false;
  private readonly clock: Clock;
  /** One slot per loop (heartbeat, backend, probe, tunnel-probe, nudge, retry, repair, watch-restart): never more. */
  private readonly timers: Timers;
  private readonly nudgesDue = new DueTimes(NUDGE_SPACING_MS);
  private servers: { close(): void }[] = [];
  /** Bound ports of /healthz and /readyz (and /metrics), and of the metrics address. */
  port = 0;
  metricsPort = 0;

  constructor(private readonly kc: k8s.KubeConfig, private readonly config: AgentConfig, private readonly runner: CommandRunner, private readonly log: Logger, options: AgentOptions = {}) {
    this.clock = options.clock ?? systemClock;
    this.timers = new Timers(this.clock);
    this.repairPeriodMs = options.repairPeriodMs ?? REPAIR_PERIOD_MS;
    this.routes = new RouteTable(runner, { ...DEFAULT_ROUTE_TABLE, ...(config.netns && { netns: config.netns }) });
    this.tunnel = makeTunnel({
      backend: config.vpnDriver,
      node: config.nodeName,
      device: config.device,
      port: config.vpnPort,
      mtu: effectiveMTU({ backend: config.vpnDriver, mtu: config.tunnelMTU, underlayMTU: config.underlayMTU }),
      stateDir: config.stateDir,
      runner,
      ...(config.netns && { netns: config.netns }),
      ...(config.psk && { psk: config.psk }),
      onExit: (what) => this.backendExited(what),
    });
    this.proxy = new ProxyRunner(config.stateDir, config.netns, log);
    this.heartbeat = new HeartbeatWriter(kc.makeApiClient(k8s.CoordinationV1Api), {
      node: config.nodeName,
      namespace: config.namespace,
      clock: this.clock,
      timers: this.timers,
      ...(config.leaseSeconds !== undefined && { leaseSeconds: config.leaseSeconds }),
      candidate: () => this.isEndpointCandidate(),
      health: (candidate) => this.health(candidate),
      onError: (err) => this.log.warn('failed to renew heartbeat', { error: err.message }),
    });
    for (const result of ['success', 'error']) this.syncs.init({ result });
    for (const kind of REPAIR_KINDS) this.repairs.init({ kind });
    registerProcessMetrics(this.registry);
    const gauge = this.registry.register(new Gauge('raven_agent_refused_values', 'Values from Gateways (addresses, ranges, ports, keys, peers, routes) refused in the last plan, by kind.'));
    this.refusals = new Refusals(gauge, REFUSAL_KINDS, (d) => this.log.warn('refused a value from the cluster', { source: d.source, kind: d.kind, reason: d.reason }));
  }

  async run(): Promise<void> {
    // Both addresses serve all three paths: the DaemonSet probes health-probe-addr and Prometheus
    // scrapes metric-bind-addr, as in Raven.
    const endpoints = { healthy: () => !this.stopped, ready: () => !!this.informer, metrics: this.registry };
    const health = await serveEndpoints(this.config.healthAddr, endpoints);
    const metrics = this.config.metricsAddr === this.config.healthAddr ? health : await serveEndpoints(this.config.metricsAddr, endpoints);
    this.servers = [...new Set([health.server, metrics.server])];
    this.port = health.port;
    this.metricsPort = metrics.port;
    const custom = this.kc.makeApiClient(k8s.CustomObjectsApi);
    const inf = k8s.makeInformer<k8s.KubernetesObject>(this.kc, `/apis/${GATEWAY_GROUP}/${GATEWAY_VERSION}/gateways`, () =>
      custom.listClusterCustomObject({ group: GATEWAY_GROUP, version: GATEWAY_VERSION, plural: 'gateways' }) as Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>,
    );
    const watchBackoff = new Backoff(100, 10_000);
    inf.on('error', (err) => {
      if (this.stopped) return;
      const delay = watchBackoff.next();
      this.log.warn('gateway watch failed; restarting', { error: (err as Error)?.message, retryMs: delay });
      this.timers.set('watch-restart', delay, () => void inf.start().catch(() => undefined));
    });
    for (const e of ['add', 'update', 'delete'] as const) inf.on(e, () => this.trigger());
    await inf.start();
    this.informer = inf;
    this.trigger();
    // The first heartbeat after the first sync: a restarted agent that adopted a running tunnel
    // reports it up, rather than "not synced yet" (backend down), which would fail it over.
    await this.syncing;
    this.heartbeat.start();
    this.backendLoop();
    this.probeLoop();
    this.tunnelProbeLoop();
    this.repairLoop();
  }

  /** Healthy: the last sync applied its plan and the tunnel it needs runs (checked each heartbeat). */
  private get backendUp(): boolean {
    return this.synced && this.backendProblem === null;
  }

  /** Level-based: one sync at a time; triggers during a sync (or a repair) cause exactly one more. */
  private trigger(): void {
    // Not before the first list: an empty cache would plan "outside" and tear down the tunnel a
    // previous agent left running (run() triggers once the informer has synced).
    if (this.stopped || !this.informer) return;
    if (this.syncing) {
      this.again = true;
      return;
    }
    this.exclusive(() => this.sync());
  }

  /** Runs one job on the data plane at a time (a sync, a repair or a session renewal); a trigger meanwhile runs a sync after it. */
  private exclusive(job: () => Promise<void>): void {
    this.syncing = job().finally(() => {
      this.syncing = undefined;
      if (this.again) {
        this.again = false;
        this.trigger();
      }
    });
  }

  /** One retry pending is enough (a sync recomputes everything); each new one waits twice as long. */
  private scheduleRetry(): void {
    if (!this.timers.has('retry')) this.timers.set('retry', this.retryBackoff.next(), () => this.trigger());
  }

  private async sync(): Promise<void> {
    const gateways = (this.informer?.list() ?? []) as unknown as Gateway[];
    const next = plan(gateways, {
      node: this.config.nodeName,
      backend: this.config.vpnDriver,
      device: this.config.device,
      // No NAT discovery yet: nothing writes natType/publicPort, so edges meet through the cloud (docs/0011).
      natTraversal: false,
      forwardNodeIP: this.config.forwardNodeIP,
      mtu: this.config.tunnelMTU,
      underlayMTU: this.config.underlayMTU,
      warmStandby: true,
    });
    // A gateway that lost its role with no successor named (its own heartbeat lapsed, say, across
    // an agent restart) keeps its tunnel and routes: nothing else would carry the region's traffic,
    // and tearing down would only make the re-election slower. So does a warm standby, whose
    // sessions make it the quickest successor. Either steps down once a successor is named.
    if (next.role === 'standby' && !next.activeNode && (await this.tunnel.running().catch(() => false))) {
      if (!this.holding) this.log.info('no active gateway in the region; keeping the tunnel until one is elected', { gateway: next.gateway ?? '' });
      this.holding = true;
      this.synced = true;
      this.retryBackoff.reset();
      return;
    }
    this.holding = false;
    try {
      const { changed, refused } = await applyPlan(next, this.tunnel, this.routes);
      if (changed.length) this.scheduleNudges();
      const proxyDropped: Dropped[] = [];
      await this.proxy.set(proxyConfigFor(gateways, this.config.nodeName, { ...this.config.proxy, nodeIP: this.config.nodeIP }, (d) => proxyDropped.push(d)));
      // Values the plan or an executor refused (see Refusals).
      this.refusals.set('plan', [...(next.dropped ?? []), ...refused, ...this.tunnel.refused(), ...proxyDropped]);
      // Healthy: the plan is in the kernel (on a gateway, the tunnel device is up with its peers).
      this.synced = true;
      const wasDown = this.backendProblem;
      this.backendProblem = null;
      if (wasDown) {
        this.log.info('tunnel backend restored', { was: wasDown });
        // Reported down at once, so reported up at once too.
        void this.heartbeat.beatNow();
      }
      this.retryBackoff.reset();
      this.timers.cancel('retry');
      if (next.role !== this.current.role || next.activeNode !== this.current.activeNode) {
        this.log.info('plan applied', { role: next.role, gateway: next.gateway ?? '', active: next.activeNode ?? '', routes: next.routes.length, peers: next.peers.length });
      }
      this.current = next;
      this.routesGauge.set(next.routes.length);
      this.peersGauge.set(next.peers.length);
      this.forgetDeparted(next);
      this.syncs.inc({ result: 'success' });
    } catch (err) {
      this.synced = false;
      this.syncs.inc({ result: 'error' });
      this.log.error('failed to apply plan', { error: (err as Error).message, role: next.role, gateway: next.gateway ?? '' });
      this.reportIfChanged();
      this.scheduleRetry();
    }
  }

  /**
   * The repair pass, on its own slot: applies the last plan applied again. Skipped while a sync
   * runs or is due (it applies everything anyway) and before any plan was applied.
   */
  private repairLoop(): void {
    const tick = async (): Promise<void> => {
      if (this.stopped) return;
      if (!this.syncing && this.synced && !this.timers.has('retry')) {
        const done = new Promise<void>((resolve) => this.exclusive(() => this.repair().finally(resolve)));
        await done;
      }
      this.timers.set('repair', this.repairPeriodMs, () => void tick());
    };
    this.timers.set('repair', this.repairPeriodMs, () => void tick());
  }

  /** Applies `current` again; whatever that had to write, someone else had changed: counted and logged. */
  private async repair(): Promise<void> {
    const p = this.current;
    try {
      const { changed, writes } = await applyPlan(p, this.tunnel, this.routes);
      if (changed.length) this.scheduleNudges();
      if (!writes.length) return;
      const restored: Record<string, string> = {};
      for (const w of writes) {
        this.repairs.inc({ kind: w.kind });
        restored[w.kind] = restored[w.kind] ? `${restored[w.kind]}; ${w.what}` : w.what;
      }
      this.log.warn('repaired the data plane: it differed from the plan applied', { role: p.role, ...restored });
    } catch (err) {
      // The kernel refused the plan it held a moment ago: like a failed sync, reported and retried.
      this.synced = false;
      this.log.error('failed to repair the data plane', { error: (err as Error).message, role: p.role });
      this.reportIfChanged();
      this.scheduleRetry();
    }
  }

  /** Checks the backend every BACKEND_CHECK_PERIOD_MS, on its own clock (renewals are 10 s apart). */
  private backendLoop(): void {
    const tick = async (): Promise<void> => {
      if (this.stopped) return;
      await this.checkBackend();
      this.timers.set('backend', BACKEND_CHECK_PERIOD_MS, () => void tick());
    };
    void tick();
  }

  /**
   * Checks, every BACKEND_CHECK_PERIOD_MS, that the tunnel the plan needs runs (its process alive, its device
   * there): a backend that died is reported down and a sync is started to bring it back.
   */
  private async checkBackend(): Promise<void> {
    if (this.syncing) return;
    if (!needsTunnel(this.current)) {
      this.backendProblem = null;
      return;
    }
    const problem = await this.tunnel.problem().catch((err: unknown) => failure('check the tunnel backend', err).message);
    if (!problem) return;
    if (problem !== this.backendProblem) this.log.warn('tunnel backend is down; restoring it', { reason: problem });
    // Cleared by the sync that restores it, not by a check that finds it back: that sync says so.
    this.backendProblem = problem;
    this.reportIfChanged();
    this.scheduleRestore();
  }

  /** Health the controller fails over on is written when it changes, not at the next renewal. */
  private reportIfChanged(): void {
    if (this.reportedUp !== undefined && this.backendUp !== this.reportedUp) void this.heartbeat.beatNow();
  }

  /**
   * The tunnel daemon exited (its executor watches it): the Lease says so now, not at the next
   * renewal, and the backend is started again through a sync: at once, or after a backoff when it
   * exited again soon after the last time (`BACKEND_STABLE_MS`).
   */
  private backendExited(what: string): void {
    if (this.stopped || !needsTunnel(this.current)) return;
    this.log.warn('tunnel backend exited', { what });
    const now = this.clock.now();
    const again = this.lastBackendExit !== undefined && now - this.lastBackendExit < BACKEND_STABLE_MS;
    this.lastBackendExit = now;
    if (again) this.timers.setIfIdle('retry', this.restartBackoff.next(), () => this.trigger());
    else this.restartBackoff.reset();
    void this.reportBackendDown().then(() => this.scheduleRestore());
  }

  /**
   * Reads why the backend is down (from /proc and the kernel) and starts a renewal saying so. The
   * restore does not wait for that write (the API may be the thing that is down): the next renewal
   * to start says down whatever happens meanwhile, and the one after the restore says up.
   */
  private async reportBackendDown(): Promise<void> {
    const problem = await this.tunnel.problem().catch((err: unknown) => failure('check the tunnel backend', err).message);
    if (!problem || this.stopped) return;
    if (problem !== this.backendProblem) this.log.warn('tunnel backend is down; restoring it', { reason: problem });
    this.backendProblem = problem;
    this.downUnreported = true;
    void this.heartbeat.beatNow();
  }

  /** A sync now, unless a retry is pending: a backend that keeps failing to start backs off like any sync. */
  private scheduleRestore(): void {
    if (!this.timers.has('retry')) this.trigger();
  }

  /** Peers we dial may have sent their first initiation to a gateway that did not know us yet. */
  private scheduleNudges(): void {
    const now = this.clock.now();
    for (const delay of NUDGE_DELAYS_MS) this.nudgesDue.add(now + delay);
    this.armNudge();
  }

  /** One timer for the earliest nudge due; each nudge re-arms it for the next. */
  private armNudge(): void {
    const at = this.nudgesDue.next();
    if (at === undefined) return;
    this.timers.set('nudge', at - this.clock.now(), () => {
      this.nudgesDue.takeUntil(Math.max(at, this.clock.now()));
      this.nudgeNow();
      this.armNudge();
    });
  }

  private nudgeNow(): void {
    if (this.stopped || this.current.role !== 'gateway') return;
    // After a sync in flight, not instead of it: under load syncs run back to back, and a skipped
    // nudge leaves the lost first initiation to WireGuard's 5 s retry.
    if (this.syncing) {
      void this.syncing.then(() => this.nudgeNow());
      return;
    }
    void this.tunnel
      .nudge(this.current)
      .then((nudged) => nudged.length && this.log.info('re-initiated handshakes', { peers: nudged.join(',') }))
      .catch((err) => this.log.warn('failed to re-initiate handshakes', { error: (err as Error).message }));
  }

  /**
   * Per-peer health for the heartbeat and /metrics: the node probed, handshake age, probe RTT, loss
   * and the current run of lost probes (what the controller weighs, see election.ts).
   */
  private async peerHealth(): Promise<Record<string, PeerHealth>> {
    const out: Record<string, PeerHealth> = {};
    const ages = await this.tunnel.handshakeAges(this.current).catch(() => new Map<string, number>());
    const now = this.clock.now();
    for (const p of this.current.peers) {
      const age = ages.get(p.gateway);
      const probe = this.probes.stats(p.gateway);
      const current = probe?.node === p.node ? probe : undefined;
      out[p.gateway] = {
        node: p.node,
        ...(age !== undefined && { handshakeAgeSeconds: age }),
        ...(current?.rttMs !== undefined && { rttMs: current.rttMs }),
        ...(current && { loss: current.loss, lostProbes: current.lostProbes, answeredProbes: current.answeredProbes }),
        ...(current?.lostSince !== undefined && { lostForMs: Math.max(0, now - current.lostSince) }),
        ...standbyProbes(this.current.staged.filter((s) => s.gateway === p.gateway), (s) => this.probes.stats(stagedKey(s))),
      };
      if (age !== undefined) this.handshakeAge.set(age, { gateway: p.gateway });
    }
    return out;
  }

  private forgetDeparted(next: NodePlan): void {
    const keep = new Set(probesPeers(next) ? [...next.peers.map((p) => p.gateway), ...next.staged.map(stagedKey)] : []);
    this.probes.retain(keep);
    for (const g of [this.handshakeAge, this.peerRtt, this.peerLoss]) g.retain((labels) => keep.has(labels.gateway ?? ''));
  }

  /**
   * Gateways, and warm standbys through their warm tunnels, ping each tunnel peer's probe address
   * from their own on their own clock, at a fixed rate: a bounded batch per round, so a thousand
   * peers never mean a thousand processes at once. A peer that becomes lost (`LOST_PROBES` in a row
   * unanswered) or reached (`REACHED_PROBES` answered) is reported at once: that is the evidence a data-path failover
   * waits for, so it does not wait for the next renewal.
   */
  private tunnelProbeLoop(): void {
    const tick = async (): Promise<void> => {
      if (this.stopped) return;
      const started = this.clock.now();
      const p = this.current;
      if (p.role === 'gateway' && !this.tunnel.retriesByItself && started - this.lastMaintenance >= MAINTENANCE_PERIOD_MS) {
        this.lastMaintenance = started;
        this.nudgeNow();
      }
      // The L7 proxy is a child we keep alive: one that died is started again within a round.
      if (!this.syncing) await this.proxy.ensure().catch((err) => this.log.warn('failed to restart the L7 proxy', { error: (err as Error).message }));
      if (probesPeers(p) && p.probeSource && this.tunnel.probeDevice()) {
        // The peers, then the remote standbys staged (through their own sessions).
        const targets: { key: string; node: string; probeIP: string; gateway?: string }[] = [
          ...p.peers.flatMap((x) => (x.probeIP ? [{ key: x.gateway, node: x.node, probeIP: x.probeIP, gateway: x.gateway }] : [])),
          ...p.staged.flatMap((x) => (x.probeIP ? [{ key: stagedKey(x), node: x.node, probeIP: x.probeIP }] : [])),
        ];
        const { batch, cursor } = roundRobin(targets, this.probeCursor, TUNNEL_PROBES_PER_ROUND);
        this.probeCursor = cursor;
        let flipped = false;
        await Promise.all(
          batch.map(async (t) => {
            const at = this.clock.now();
            const was = this.verdict(t.key, t.node);
            const r = await this.pingFrom(p.probeSource!, t.probeIP, TUNNEL_PROBE_TIMEOUT_MS).catch(() => ({ ok: false }));
            this.probes.record(t.key, t.node, { ...r, at });
            if (this.verdict(t.key, t.node) !== was) flipped = true;
            if (!t.gateway) return;
            const s = this.probes.stats(t.key)!;
            this.peerLoss.set(s.loss, { gateway: t.gateway });
            if (s.rttMs !== undefined) this.peerRtt.set(s.rttMs / 1000, { gateway: t.gateway });
          }),
        );
        if (flipped && this.current === p) void this.heartbeat.beatNow();
        this.renewStale(p);
      }
      this.timers.set('tunnel-probe', TUNNEL_PROBE_PERIOD_MS - (this.clock.now() - started), () => void tick());
    };
    void tick();
  }

  /**
   * Peers we dial that stopped answering get a new session: a remote standby as soon as it is lost
   * (nothing flows to it, and a data-path failover needs it reached), an active peer after
   * `ACTIVE_STALE_MS`. A job of its own on the data plane (`exclusive`): a sync meanwhile could
   * move a peer's allowed IPs (a standby taking over), which a re-created peer would put back.
   */
  private renewStale(p: NodePlan): void {
    if (this.syncing || this.current !== p) return;
    const now = this.clock.now();
    const wall = Date.now();
    const stale: StaleSession[] = [];
    const consider = (key: string, node: string, gateway: string, publicKey: string | undefined, endpoint: string | undefined, afterMs: number): void => {
      const s = this.probes.stats(key);
      if (!publicKey || !endpoint || s?.node !== node || s.lostSince === undefined || s.lostProbes < LOST_PROBES || now - s.lostSince < afterMs) return;
      stale.push({ gateway, publicKey, endpoint, since: wall - (now - s.lostSince) });
    };
    for (const x of p.staged) consider(stagedKey(x), x.node, x.gateway, x.publicKey, x.endpoint, 0);
    // As for nudges: only peers only we dial (behind NAT), so the two sides' initiations do not cross.
    for (const x of p.peers) if (x.keepaliveSeconds !== undefined && x.path === 'direct') consider(x.gateway, x.node, x.gateway, x.publicKey, x.endpoint, ACTIVE_STALE_MS);
    if (!stale.length) return;
    this.exclusive(async () => {
      try {
        const renewed = await this.tunnel.renewStale(stale);
        if (renewed.length) this.log.info('renewed silent tunnel sessions', { peers: renewed.join(',') });
      } catch (err) {
        this.log.warn('failed to renew silent tunnel sessions', { error: (err as Error).message });
      }
    });
  }

  /** What the controller would read of a probe target: lost, reached, or neither yet (see contract/heartbeat.ts). */
  private verdict(key: string, node: string): 'lost' | 'reached' | undefined {
    const s = this.probes.stats(key);
    if (s?.node !== node) return undefined;
    return s.lostProbes >= LOST_PROBES ? 'lost' : s.answeredProbes >= REACHED_PROBES ? 'reached' : undefined;
  }

  /** This node is an endpoint candidate (tunnel or proxy) of some Gateway: it heartbeats as one. */
  private isEndpointCandidate(): boolean {
    const gws = (this.informer?.list() ?? []) as unknown as Gateway[];
    return gws.some((g) => (g.spec?.endpoints ?? []).some((e) => e.nodeName === this.config.nodeName));
  }

  /** Standbys probe their active gateway on their own clock; the heartbeat carries the latest result. */
  private probeLoop(): void {
    const tick = async (): Promise<void> => {
      if (this.stopped) return;
      if (this.current.role === 'standby') {
        const before = this.observation;
        await this.probeActive().catch(() => undefined);
        const now = this.observation;
        // A change is reported now, not at the next renewal (10 s away): a gateway that stopped
        // answering (the controller fails it over on this), or answers again.
        const vote = (o: ActiveGatewayObservation | undefined): string => (o ? `${o.node}/${!o.reachable && o.lanReachable}` : '');
        if (now && vote(now) !== vote(before)) void this.heartbeat.beatNow();
      } else this.observation = undefined;
      this.timers.set('probe', PROBE_PERIOD_MS, () => void tick());
    };
    void tick();
  }

  /**
   * Standbys ping the active gateway and, to prove they are not the ones cut off, a witness: another
   * member, or (in a two-node region) the node's default gateway, its LAN router.
   */
  private async probeActive(): Promise<void> {
    const gws = (this.informer?.list() ?? []) as unknown as Gateway[];
    const mine = gws.find((g) => g.metadata.name === this.current.gateway);
    const active = this.current.activeNode;
    if (!mine || !active) return;
    const nodes = mine.status?.nodes ?? [];
    const activeIP = nodes.find((n) => n.nodeName === active)?.privateIP;
    const witness = nodes.find((n) => n.nodeName !== active && n.nodeName !== this.config.nodeName)?.privateIP ?? (await this.defaultGateway());
    if (!activeIP) return;
    const probeActive = async (): Promise<boolean> => (await this.ping(activeIP)) || this.ping(activeIP);
    const [reachable, witnessed] = await Promise.all([probeActive(), witness ? this.ping(witness) : Promise.resolve(undefined)]);
    const lanReachable = witnessed ?? reachable;
    this.observation = { node: active, reachable, lanReachable, observedAt: this.clock.now() };
    this.activeReachable.set(reachable ? 1 : 0);
  }

  /** The IPv4 default route's gateway (cached for 30 s), for standbys with no other member to ask. */
  private async defaultGateway(): Promise<string | undefined> {
    if (this.gatewayCache && this.clock.now() - this.gatewayCache.at < 30_000) return this.gatewayCache.ip;
    const args = ['-4', '-json', 'route', 'show', 'default'];
    const r = await this.runner.run('ip', this.config.netns ? ['-n', this.config.netns, ...args] : args);
    let ip: string | undefined;
    try {
      ip = (JSON.parse(r.stdout || '[]') as { gateway?: string }[]).find((x) => x.gateway)?.gateway;
    } catch {
      ip = undefined;
    }
    this.gatewayCache = { ip, at: this.clock.now() };
    return ip;
  }

  private async ping(ip: string): Promise<boolean> {
    return (await this.runPing(['-c', '1', '-W', String(PROBE_TIMEOUT_MS / 1000), ip])).code === 0;
  }

  private async pingFrom(source: string, ip: string, timeoutMs: number): Promise<{ ok: boolean; rttMs?: number }> {
    const r = await this.runPing(['-c', '1', '-W', String(timeoutMs / 1000), '-I', source, ip]);
    const rtt = r.code === 0 ? parsePingRtt(r.stdout) : undefined;
    return { ok: r.code === 0, ...(rtt !== undefined && { rttMs: rtt }) };
  }

  private runPing(args: readonly string[]): Promise<{ code: number; stdout: string }> {
    return this.config.netns ? this.runner.run('ip', ['netns', 'exec', this.config.netns, 'ping', ...args]) : this.runner.run('ping', args);
  }

  /**
   * What the next heartbeat says. A backend that went down since the last write is reported down
   * once, even if it is back (then another write says up).
   */
  private async health(candidate: boolean): Promise<AgentHealth> {
    const backendUp = this.backendUp && !this.downUnreported;
    this.reportedUp = backendUp;
    if (this.downUnreported) {
      this.downUnreported = false;
      if (this.backendUp) void this.heartbeat.beatNow();
    }
    const peers = probesPeers(this.current) ? await this.peerHealth() : {};
    return {
      backendUp,
      peers,
      ...(this.observation && { activeGateway: this.observation }),
      ...(candidate && { publicKey: await this.tunnel.publicKey() }),
    };
  }

  /** Timers armed and not yet run: one per loop at most, however long the agent has run. */
  get pendingTimers(): number {
    return this.timers.size;
  }

  /** Stops and removes everything this agent put on the node. */
  async stop(): Promise<void> {
    if (!(await this.halt())) return;
    await this.routes.cleanUp();
    await this.tunnel.cleanUp();
    await this.proxy.stop();
    for (const s of this.servers) s.close();
  }

  /**
   * Stops, leaving the data plane as it is (routes, rules, tunnel device, its daemon): the next
   * agent on this node adopts them, so a restart or a rolling update cuts no traffic. The L7 proxy,
   * a child of this process, stops with it.
   */
  async release(): Promise<void> {
    if (!(await this.halt())) return;
    this.tunnel.release();
    // One last renewal with a longer lease: the next agent starts before the controller would
    // take the gateway away for a lapsed heartbeat. Bounded: the API may be what is down.
    if (this.isEndpointCandidate() && (await this.heartbeat.last(RESTART_LEASE_SECONDS, RELEASE_RENEW_TIMEOUT_MS))) {
      this.log.info('renewed the heartbeat for the next agent', { leaseSeconds: this.heartbeat.finalLease });
    }
    await this.proxy.stop();
    for (const s of this.servers) s.close();
  }

  /** Stops every loop and waits for the data-plane job in flight; false when already stopped. */
  private async halt(): Promise<boolean> {
    if (this.stopped) return false;
    this.stopped = true;
    this.timers.stop();
    this.heartbeat.stop();
    await this.informer?.stop();
    await this.syncing;
    return true;
  }
}
