/**
 * The gateway controller process: watches Gateways, Nodes, agent heartbeat Leases and raven-cfg;
 * reconciles one Gateway per key through a deduplicating work queue (plus one cluster-wide key,
 * PROXY_ENTRY_KEY, for the L7 proxy's in-cluster entry); writes status, events, membership labels
 * and EndpointSlices. All decisions are made by the pure functions in election.ts, membership.ts
 * and status.ts; this file only gathers their inputs and writes their outputs.
 */
import { isDeepStrictEqual } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { GATEWAY_GROUP, GATEWAY_LABEL, GATEWAY_VERSION } from '../contract/names.js';
import type { Gateway, NodeLike } from '../contract/gateway.js';
import type { Dropped } from '../platform/canonical.js';
import { Refusals } from '../platform/refusals.js';
import { parseGateway } from '../contract/gateway.js';
import { expiresAt, type Heartbeat, isLost, parseHeartbeat } from '../contract/heartbeat.js';
import { parseRavenCfg, RAVEN_CFG } from '../contract/raven-cfg.js';
import { serveEndpoints } from '../platform/http-endpoints.js';
import { code, LeaderElector } from '../platform/leader-election.js';
import type { Logger } from '../platform/log.js';
import { assignNodes, MembershipIndex, membershipKey } from './membership.js';
import { Counter, Gauge, Histogram, Registry, registerProcessMetrics } from '../platform/metrics.js';
import { WorkQueue } from './workqueue.js';
import { activeTunnelNodes, type ClusterCandidate, clusterCandidates, DATA_PATH_PREFIX, DATAPATH_HOLD_DOWN_MS, type Disruption, elect, type ElectionEvent, type ElectionResult, electionEvents, evidenceKey, type Features, HEARTBEAT_GAP_GRACES, heartbeatDisruption, holdReason, keyChangeEvents, publishedKeys, sightGraceMs } from './election.js';
import { type Clock, systemClock } from '../platform/timers.js';
import { EXPOSURE_GATEWAY_LABEL, PROXY_SERVICE_NAME, SLICE_MANAGED_BY_LABEL, SLICE_MANAGER, SLICE_SERVICE_LABEL } from '../contract/names.js';
import { desiredExposure, type Exposed, type ServiceLike, withPublicAddresses } from './exposure.js';
import { desiredProxyEntry, type EndpointSliceLike, ownedSliceFields, PROXY_ENTRY_KEY } from './proxy-entry.js';
import { type BlockAffinityLike, gatewayStatusWithDrops } from './status.js';

export const CONTROLLER_LEASE = 'raven-controller';
const PHASES = ['read', 'status', 'events', 'labels', 'exposure', 'proxy-entry'] as const;
/** Kinds of refused values, pre-initialised in `raven_controller_refused_values`. */
const REFUSAL_KINDS = ['gateway-name', 'endpoint', 'node', 'node-ip', 'subnet', 'public-ip', 'port', 'public-key', 'config'];

export interface ControllerOptions {
  readonly namespace: string;
  readonly identity: string;
  readonly leaderElect: boolean;
  readonly httpAddr: string;
  readonly leaseDurationSeconds: number;
  readonly retryPeriodMs: number;
  /** Gateways reconciled in parallel (one key is never processed twice at once). */
  readonly workers: number;
}

type Cache<T extends k8s.KubernetesObject> = k8s.Informer<T> & k8s.ObjectCache<T>;

export class GatewayController {
  readonly registry = new Registry();
  private readonly reconciles = this.registry.register(new Counter('raven_controller_reconcile_total', 'Gateway reconciles by result.'));
  private readonly errors = this.registry.register(new Counter('raven_controller_reconcile_errors_total', 'Reconcile errors by phase.'));
  private readonly duration = this.registry.register(new Histogram('raven_controller_reconcile_duration_seconds', 'Time to reconcile one Gateway.', [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5]));
  private readonly elections = this.registry.register(new Counter('raven_controller_elections_total', 'Active endpoints elected, by type.'));
  private readonly failovers = this.registry.register(new Counter('raven_controller_failovers_total', 'Active endpoints replaced after becoming unusable, by type.'));
  private readonly decision = this.registry.register(new Histogram('raven_controller_decision_latency_seconds', 'From a failure becoming observable to the new status being written.', [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5]));
  private readonly leader = this.registry.register(new Gauge('raven_controller_leader', '1 when this replica is the leader.'));
  private readonly disruptionGauge = this.registry.register(new Gauge('raven_controller_heartbeat_disruption', '1 while a large share of the cluster\'s heartbeats lapsed together (a control-plane fault): no failover for expired heartbeats.'));
  private readonly heldFailovers = this.registry.register(new Counter('raven_controller_held_failovers_total', 'Active endpoints kept although their heartbeat expired (grace after regaining sight, heartbeat disruption) or remote regions lost them with no better standby or within the hold-down (data-path), by reason.'));
  private readonly dataPathGauge = this.registry.register(new Counter('raven_controller_data_path_failovers_total', 'Tunnel endpoints replaced because remote regions lost them through the tunnel while a standby reached them.'));
  private readonly refusals = new Refusals(
    this.registry.register(new Gauge('raven_controller_refused_values', 'Values from Gateways, Nodes, Services and Calico blocks left out of Gateway status, by kind.')),
    REFUSAL_KINDS,
    (d, gateway) => this.log.warn('refused a value', { gateway, source: d.source, kind: d.kind, reason: d.reason }),
  );
  private readonly refusedLeases = this.registry.register(new Gauge('raven_controller_refused_heartbeats', 'Heartbeat Leases not believed (holder is not the node, renewal in the future, bad name).'));
  /** Refused heartbeat Leases and their reasons, each logged once when it appears. */
  private readonly refusedLeaseReasons = new Map<string, string>();
  /** Believed heartbeats by node, and the node of each Lease they came from (`heartbeats`). */
  private readonly beats = new Map<string, Heartbeat>();
  private readonly leaseNodes = new Map<string, string>();
  private beatsBuilt = false;
  /** The WireGuard key last published for each node, so a change is an event even across failovers. */
  private readonly knownKeys = new Map<string, string>();

  private readonly queue = new WorkQueue<string>({ baseDelayMs: 20, maxDelayMs: 30_000 });
  private readonly core: k8s.CoreV1Api;
  private readonly custom: k8s.CustomObjectsApi;
  private gateways?: Cache<k8s.KubernetesObject>;
  private nodes?: Cache<k8s.V1Node>;
  private leases?: Cache<k8s.V1Lease>;
  private configMaps?: Cache<k8s.V1ConfigMap>;
  private services?: Cache<k8s.V1Service>;
  /** Our EndpointSlices of the L7 proxy's Service (by the managed-by label), to write only differences. */
  private proxySlices?: Cache<k8s.V1EndpointSlice>;
  /** Why the proxy entry has no slice, last logged (undefined while it has one). */
  private proxyEntryNone?: string;
  private blockAffinities?: Cache<k8s.KubernetesObject>;
  private readonly discovery: k8s.DiscoveryV1Api;
  private readonly informers: Cache<k8s.KubernetesObject>[] = [];
  private synced = false;
  private stopped = false;
  private elector?: LeaderElector;
  private server?: { close(): void };
  /** When each Gateway's pending work became observable (for decision latency). */
  private readonly triggeredAt = new Map<string, number>();
  /** One pending heartbeat-expiry check per Gateway. */
  private readonly expiryTimers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  /** Node → Gateway; recomputed only after node or Gateway changes, not on every heartbeat. */
  private assignment?: Map<string, string>;
  /** What membership reads of each Gateway (`membershipKey`), and each node's labels: a change invalidates `assignment`. */
  private readonly membershipKeys = new Map<string, string>();
  private readonly nodeLabels = new Map<string, string>();
  private membership?: MembershipIndex;
  /** The cluster's gateway candidates (`clusterCandidates`), until membership or endpoints change. */
  private candidates?: ClusterCandidate[];
  /** Node → the Gateways naming it in spec endpoints or status nodes, and the reverse (`indexGatewayNodes`). */
  private readonly nodeGateways = new Map<string, Set<string>>();
  private readonly gatewayNodes = new Map<string, Set<string>>();
  /** When (and why) this controller last regained sight of heartbeats: an expired one is no evidence for `graceMs` after. */
  private sightSince?: number;
  private sightWhy?: string;
  /** Set when the Lease watch reconnects (resumed, relisted or restarted); its first event regains sight. */
  private reconnected?: string;
  /** A cluster-wide Event not yet recorded (the API may have been down when it was due). */
  private pendingEvent?: { reason: string; message: string; sending: boolean };
  /** When the last heartbeat Lease event arrived, to notice a gap. */
  private lastHeartbeatEventAt?: number;
  /** The grace after regaining sight (`sightGraceMs` of the candidates' heartbeats, as of the last reconcile). */
  private graceMs = sightGraceMs([]);
  /** The heartbeat disruption in force, if any (entered and left in `holdReason`). */
  private disruption?: Disruption;
  /** Re-checks every Gateway when the grace after regaining sight ends. */
  private graceTimer?: NodeJS.Timeout;
  /** Per Gateway, the held failovers last logged, so each is logged once. */
  private readonly heldLogged = new Map<string, string>();
  /** Every Gateway's active tunnel node, from the cache (dropped on any Gateway event): whose data-path reports count. */
  private activeTunnels?: Map<string, string>;
  /** Per Gateway, when its last data-path failover was made: no other within DATAPATH_HOLD_DOWN_MS. */
  private readonly dataPathFailovers = new Map<string, number>();
  /** Per node, the Gateways its last heartbeat reported lost: a change re-checks those Gateways. */
  private readonly lostReports = new Map<string, Set<string>>();

  constructor(private readonly kc: k8s.KubeConfig, private readonly opts: ControllerOptions, private readonly log: Logger, private readonly clock: Clock = systemClock) {
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.discovery = kc.makeApiClient(k8s.DiscoveryV1Api);
    for (const phase of PHASES) this.errors.init({ phase });
    registerProcessMetrics(this.registry);
    for (const result of ['success', 'error']) this.reconciles.init({ result });
    for (const type of ['tunnel', 'proxy']) {
      this.elections.init({ type });
      this.failovers.init({ type });
    }
    for (const reason of ['grace', 'disruption', 'data-path']) this.heldFailovers.init({ reason });
    this.disruptionGauge.set(0);
  }

  /** The HTTP port actually bound (useful with port 0). */
  port = 0;

  async run(): Promise<void> {
    const { server, port } = await serveEndpoints(this.opts.httpAddr, {
      healthy: () => !this.stopped,
      ready: () => !this.opts.leaderElect || !this.elector?.isLeader || this.synced,
      metrics: this.registry,
    });
    this.server = server;
    this.port = port;
    this.log.info('serving health and metrics', { port });
    if (!this.opts.leaderElect) {
      await this.startControllers();
      return;
    }
    this.elector = new LeaderElector(this.kc, {
      namespace: this.opts.namespace,
      name: CONTROLLER_LEASE,
      identity: this.opts.identity,
      leaseDurationSeconds: this.opts.leaseDurationSeconds,
      retryPeriodMs: this.opts.retryPeriodMs,
      log: (m) => this.log.info(m),
      onStartedLeading: () => {
        this.leader.set(1);
        void this.startControllers();
      },
      onStoppedLeading: () => {
        // A deposed leader's caches and queue may be stale; exiting is the safe reset (the pod restarts).
        this.leader.set(0);
        this.log.error('stopped leading; exiting so a fresh replica takes over');
        void this.stop().then(() => process.exit(1));
      },
    });
    this.elector.start();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.queue.shutdown();
    for (const { timer } of this.expiryTimers.values()) clearTimeout(timer);
    clearTimeout(this.graceTimer);
    for (const inf of this.informers) await inf.stop();
    await this.elector?.stop();
    this.server?.close();
  }

  private async startControllers(): Promise<void> {
    const ns = this.opts.namespace;
    const coordination = this.kc.makeApiClient(k8s.CoordinationV1Api);
    this.gateways = this.watch('gateways', `/apis/${GATEWAY_GROUP}/${GATEWAY_VERSION}/gateways`, () =>
      this.custom.listClusterCustomObject({ group: GATEWAY_GROUP, version: GATEWAY_VERSION, plural: 'gateways' }) as Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>,
    );
    this.nodes = this.watch('nodes', '/api/v1/nodes', () => this.core.listNode());
    this.leases = this.watch('leases', `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`, () => coordination.listNamespacedLease({ namespace: ns }), undefined, (why) => (this.reconnected = why));
    this.configMaps = this.watch('configmaps', `/api/v1/namespaces/${ns}/configmaps`, () => this.core.listNamespacedConfigMap({ namespace: ns }));
    // Every Service of our namespace: the exposure Services (by label) and the proxy's entry (by name).
    this.services = this.watch('services', `/api/v1/namespaces/${ns}/services`, () => this.core.listNamespacedService({ namespace: ns }));
    const serviceChanged = (svc: k8s.V1Service): void => {
      const gw = svc.metadata?.labels?.[EXPOSURE_GATEWAY_LABEL];
      if (gw) this.enqueue(gw);
      if (svc.metadata?.name === PROXY_SERVICE_NAME) this.queue.add(PROXY_ENTRY_KEY);
    };
    this.services.on('add', serviceChanged);
    this.services.on('update', serviceChanged);
    this.services.on('delete', serviceChanged);
    const managed = `${SLICE_MANAGED_BY_LABEL}=${SLICE_MANAGER}`;
    this.proxySlices = this.watch('endpointslices', `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`, () => this.discovery.listNamespacedEndpointSlice({ namespace: ns, labelSelector: managed }), managed);
    // A slice edited or deleted by someone else is put back.
    const sliceChanged = (): void => this.queue.add(PROXY_ENTRY_KEY);
    this.proxySlices.on('add', sliceChanged);
    this.proxySlices.on('update', sliceChanged);
    this.proxySlices.on('delete', sliceChanged);

    const gatewayChanged = (g: k8s.KubernetesObject, deleted = false): void => {
      const name = g.metadata!.name!;
      // Membership is recomputed only when what it reads changed: not on each status write.
      const key = deleted ? undefined : JSON.stringify([membershipKey(g as unknown as Gateway), (g as unknown as Gateway).spec?.endpoints ?? null]);
      if (key !== this.membershipKeys.get(name)) {
        this.assignment = undefined;
        this.membership = undefined;
        this.candidates = undefined;
        if (key === undefined) this.membershipKeys.delete(name);
        else this.membershipKeys.set(name, key);
      }
      this.indexGatewayNodes(name, deleted ? undefined : (g as unknown as Gateway));
      this.activeTunnels = undefined;
      this.enqueue(name);
      // Status (active endpoints, node addresses) or exposeType may have changed: the proxy entry follows.
      this.queue.add(PROXY_ENTRY_KEY);
    };
    this.gateways.on('add', gatewayChanged);
    this.gateways.on('update', gatewayChanged);
    this.gateways.on('delete', (g) => gatewayChanged(g, true));
    const nodeChanged = (n: k8s.V1Node, deleted = false): void => {
      const name = n.metadata!.name!;
      // The Gateway it belonged to is checked too, when its labels (or its existence) changed.
      const labels = deleted ? undefined : JSON.stringify(n.metadata?.labels ?? {});
      if (labels !== this.nodeLabels.get(name)) {
        const before = this.assignment?.get(name);
        if (before) this.enqueue(before);
        // This node's Gateway, from the membership index: the assignment of the others stands.
        const owner = deleted ? undefined : (this.membership ??= new MembershipIndex(this.gatewayList())).matching(n as unknown as NodeLike)[0];
        if (owner !== before) this.candidates = undefined;
        if (owner) this.assignment?.set(name, owner);
        else this.assignment?.delete(name);
        if (labels === undefined) this.nodeLabels.delete(name);
        else this.nodeLabels.set(name, labels);
      }
      this.enqueueGatewaysOfNode(name, n.metadata?.labels?.[GATEWAY_LABEL], deleted ? undefined : (n as unknown as NodeLike));
    };
    this.nodes.on('add', (n) => nodeChanged(n));
    this.nodes.on('update', (n) => nodeChanged(n));
    this.nodes.on('delete', (n) => nodeChanged(n, true));
    const leaseChanged = (l: k8s.V1Lease): void => {
      const now = this.clock.now();
      const previous = this.beats.get(this.leaseNodes.get(l.metadata?.name ?? '') ?? '');
      const hb = this.noteLease(l, now);
      if (!hb) return;
      const last = this.lastHeartbeatEventAt;
      this.lastHeartbeatEventAt = now;
      if (last !== undefined && now - last > HEARTBEAT_GAP_GRACES * this.graceMs) this.regainSight(`heartbeat events resumed after ${((now - last) / 1000).toFixed(1)} s without any`, now);
      else if (this.reconnected) this.regainSight(this.reconnected, now);
      this.reconnected = undefined;
      // A renewal that changes nothing an election reads waits for the expiry timer: at 10,000
      // nodes, a reconcile per renewal was a thousand a second.
      const news = !previous || now > expiresAt(previous) || previous.leaseDurationSeconds !== hb.leaseDurationSeconds || evidenceKey(previous) !== evidenceKey(hb);
      if (news) this.enqueueGatewaysOfNode(hb.node);
      // Data-path evidence: a Gateway this node now reports lost, or no longer does, is re-checked.
      const lost = new Set(Object.entries(hb.health?.peers ?? {}).filter(([, p]) => isLost(p)).map(([g]) => g));
      const before = this.lostReports.get(hb.node) ?? new Set<string>();
      for (const g of new Set([...lost, ...before])) if (lost.has(g) !== before.has(g)) this.enqueue(g);
      if (lost.size) this.lostReports.set(hb.node, lost);
      else this.lostReports.delete(hb.node);
    };
    this.leases.on('add', leaseChanged);
    this.leases.on('update', leaseChanged);
    this.leases.on('delete', (l: k8s.V1Lease) => {
      const node = this.leaseNodes.get(l.metadata?.name ?? '');
      this.forgetLease(l.metadata?.name ?? '');
      if (node) this.enqueueGatewaysOfNode(node);
    });
    const cfgChanged = (c: k8s.V1ConfigMap): void => {
      if (c.metadata?.name === RAVEN_CFG) this.enqueueAll();
    };
    this.configMaps.on('add', cfgChanged);
    this.configMaps.on('update', cfgChanged);
    this.configMaps.on('delete', cfgChanged);

    if (await this.servesCalico()) {
      this.blockAffinities = this.watch('blockaffinities', '/apis/crd.projectcalico.org/v1/blockaffinities', () =>
        this.custom.listClusterCustomObject({ group: 'crd.projectcalico.org', version: 'v1', plural: 'blockaffinities' }) as Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>,
      );
      const blockChanged = (b: k8s.KubernetesObject): void => {
        const node = (b as BlockAffinityLike).spec?.node;
        if (node) this.enqueueGatewaysOfNode(node);
      };
      this.blockAffinities.on('add', blockChanged);
      this.blockAffinities.on('update', blockChanged);
      this.blockAffinities.on('delete', blockChanged);
    }

    await Promise.all(this.informers.map((i) => i.start()));
    this.synced = true;
    this.regainSight(this.opts.leaderElect ? 'became leader; caches synced' : 'started; caches synced');
    this.log.info('caches synced; reconciling', { gateways: this.gateways.list().length, nodes: this.nodes.list().length });
    this.enqueueAll();
    for (let i = 0; i < this.opts.workers; i++) void this.worker();
  }

  /**
   * An informer that restarts itself (with backoff) after errors other than 410, which it relists
   * itself. `resynced`, if given, hears of every (re)start after the caches first synced: a watch
   * resumed, relisted, or restarted after an error.
   */
  private watch<T extends k8s.KubernetesObject>(name: string, path: string, list: () => Promise<k8s.KubernetesListObject<T>>, labelSelector?: string, resynced?: (why: string) => void): Cache<T> {
    const inf = k8s.makeInformer<T>(this.kc, path, list, labelSelector);
    let delay = 100;
    inf.on('error', (err) => {
      if (this.stopped) return;
      this.log.warn('watch failed; restarting', { informer: name, error: (err as Error)?.message ?? String(err), retryMs: delay });
      setTimeout(() => {
        if (!this.stopped) void inf.start().then(() => (delay = 100), () => undefined);
      }, delay);
      delay = Math.min(delay * 2, 10_000);
    });
    inf.on('connect', () => {
      delay = 100;
      if (this.synced) resynced?.(`the ${name} watch reconnected`);
    });
    this.informers.push(inf as unknown as Cache<k8s.KubernetesObject>);
    return inf;
  }

  /** Calico IPAM's BlockAffinities are watched only where Calico's CRDs exist (checked at start). */
  private async servesCalico(): Promise<boolean> {
    try {
      const groups = await this.kc.makeApiClient(k8s.ApisApi).getAPIVersions();
      return groups.groups.some((g) => g.name === 'crd.projectcalico.org');
    } catch (err) {
      this.log.warn('cannot list API groups; Calico pod CIDRs will not be read', { error: (err as Error).message });
      return false;
    }
  }

  private enqueue(gateway: string, observableAt = this.clock.now()): void {
    if (!this.triggeredAt.has(gateway)) this.triggeredAt.set(gateway, observableAt);
    this.queue.add(gateway);
  }

  private enqueueAll(): void {
    for (const g of this.gateways?.list() ?? []) this.enqueue(g.metadata!.name!);
    this.queue.add(PROXY_ENTRY_KEY);
  }

  /**
   * Enqueues every Gateway `node` matters to: those naming it in spec endpoints or status nodes
   * (an index kept per Gateway event), the one its raven label names, and the one it belongs to
   * now (the membership index, built once per set of Gateways). Constant work per event: at 10,000
   * nodes and 1,000 Gateways, scanning every Gateway on every event was the controller's bottleneck.
   */
  private enqueueGatewaysOfNode(node: string, labelled?: string, obj: NodeLike | undefined = this.nodes?.get(node) as unknown as NodeLike | undefined): void {
    for (const g of this.nodeGateways.get(node) ?? []) this.enqueue(g);
    if (labelled && this.gateways?.get(labelled)) this.enqueue(labelled);
    const owner = obj ? (this.membership ??= new MembershipIndex(this.gatewayList())).matching(obj)[0] : undefined;
    if (owner) this.enqueue(owner);
  }

  /** Keeps `nodeGateways` (node → Gateways naming it in spec endpoints or status nodes) for one Gateway. */
  private indexGatewayNodes(name: string, gw: Gateway | undefined): void {
    for (const n of this.gatewayNodes.get(name) ?? []) {
      const set = this.nodeGateways.get(n);
      set?.delete(name);
      if (set?.size === 0) this.nodeGateways.delete(n);
    }
    const endpoints: unknown = gw?.spec?.endpoints;
    const statusNodes: unknown = gw?.status?.nodes;
    const named = new Set<string>();
    for (const list of [endpoints, statusNodes]) {
      if (!Array.isArray(list)) continue;
      for (const e of list as unknown[]) {
        const n = (e as { nodeName?: unknown } | null)?.nodeName;
        if (typeof n === 'string') named.add(n);
      }
    }
    if (named.size === 0) this.gatewayNodes.delete(name);
    else this.gatewayNodes.set(name, named);
    for (const n of named) (this.nodeGateways.get(n) ?? this.nodeGateways.set(n, new Set()).get(n)!).add(name);
  }

  private gatewayList(): Gateway[] {
    return (this.gateways?.list() ?? []) as unknown as Gateway[];
  }

  private nodeList(): NodeLike[] {
    return (this.nodes?.list() ?? []) as unknown as NodeLike[];
  }

  private async worker(): Promise<void> {
    for (;;) {
      const key = await this.queue.get();
      if (key === undefined) return;
      const started = performance.now();
      try {
        await this.reconcile(key);
        this.queue.forget(key);
        this.reconciles.inc({ result: 'success' });
      } catch (err) {
        const phase = (err as { phase?: string }).phase ?? 'read';
        this.errors.inc({ phase });
        this.reconciles.inc({ result: 'error' });
        const retryMs = this.queue.addRateLimited(key);
        this.log.warn(key === PROXY_ENTRY_KEY ? 'failed to reconcile the L7 proxy entry; retrying' : 'failed to reconcile gateway; retrying', { key, phase, error: (err as Error).message, retryMs });
      } finally {
        this.duration.observe((performance.now() - started) / 1000);
        this.queue.done(key);
      }
    }
  }

  private features(): Features {
    return parseRavenCfg(this.configMaps?.get(RAVEN_CFG, this.opts.namespace)?.data);
  }

  /**
   * Every believed heartbeat, by node. Parsed once per Lease write, as it arrives (a reconcile
   * used to parse all of them: 10,000 health annotations for each of 1,000 Gateways); built from
   * the cache on first use, for Leases listed before the handlers ran.
   */
  private heartbeats(now: number): ReadonlyMap<string, Heartbeat> {
    if (!this.beatsBuilt) {
      this.beatsBuilt = true;
      for (const l of this.leases?.list() ?? []) this.noteLease(l, now);
    }
    return this.beats;
  }

  /** Parses one Lease into `beats` (or the refused list, logged once per reason); its heartbeat, if believed. */
  private noteLease(l: k8s.V1Lease, now: number): Heartbeat | undefined {
    const name = l.metadata?.name ?? '';
    const { heartbeat, refused } = parseHeartbeat(l, now);
    this.forgetLease(name);
    if (heartbeat) {
      this.beats.set(heartbeat.node, heartbeat);
      this.leaseNodes.set(name, heartbeat.node);
    } else if (refused) {
      if (this.refusedLeaseReasons.get(name) !== refused) this.log.warn('heartbeat not believed', { lease: name, reason: refused });
      this.refusedLeaseReasons.set(name, refused);
    }
    this.refusedLeases.set(this.refusedLeaseReasons.size);
    return heartbeat;
  }

  private forgetLease(name: string): void {
    const node = this.leaseNodes.get(name);
    if (node !== undefined) this.beats.delete(node);
    this.leaseNodes.delete(name);
    this.refusedLeaseReasons.delete(name);
  }

  async reconcile(name: string): Promise<void> {
    if (name === PROXY_ENTRY_KEY) return this.reconcileProxyEntry();
    const observableAt = this.triggeredAt.get(name);
    this.triggeredAt.delete(name);
    // Parsed: spec endpoints and old status with only values that are well-formed, in canonical form.
    const parsed = parseGateway(this.gateways?.get(name));
    const gw = parsed.gateway;
    const nodes = this.nodeList();
    if (!gw) {
      this.refusals.set(name, []);
      await this.phase('labels', () => this.syncLabels(name, new Set(), nodes));
      await this.phase('exposure', () => this.syncExposure(name, []));
      return;
    }
    const now = this.clock.now();
    const byNode = (this.assignment ??= assignNodes(this.gatewayList(), nodes).byNode);
    const heartbeats = this.heartbeats(now);
    const holdExpired = this.holdReason(heartbeats, byNode, now);
    const lastDataPath = this.dataPathFailovers.get(name);
    const result = elect({
      gateway: gw,
      nodes: new Map(nodes.map((n) => [n.metadata.name, n])),
      memberOf: byNode,
      heartbeats,
      features: this.features(),
      now,
      ...(holdExpired && { holdExpired }),
      remoteActives: (this.activeTunnels ??= activeTunnelNodes(this.gatewayList())),
      ...(lastDataPath !== undefined && { dataPathHoldUntil: lastDataPath + DATAPATH_HOLD_DOWN_MS }),
    });
    const heldEvents = this.logHeld(name, result.held);
    const members = nodes.filter((n) => byNode.get(n.metadata.name) === name);
    const ownServices = new Map((this.services?.list() ?? []).filter((s) => s.metadata?.labels?.[EXPOSURE_GATEWAY_LABEL] === name).map((s) => [s.metadata!.name!, s as unknown as ServiceLike]));
    const blocks = (this.blockAffinities?.list() ?? []) as unknown as BlockAffinityLike[];
    const dropped: Dropped[] = [...parsed.dropped];
    const exposedActive = withPublicAddresses(gw, result.active, ownServices, dropped);
    const { status, dropped: fromNodes } = gatewayStatusWithDrops(gw, members, exposedActive, blocks);
    this.refusals.set(name, [...dropped, ...fromNodes]);
    const before = gw.status?.activeEndpoints ?? [];

    if (!isDeepStrictEqual(normalizeStatus(gw.status), normalizeStatus(status))) {
      await this.phase('status', () =>
        this.custom.replaceClusterCustomObjectStatus({
          group: GATEWAY_GROUP,
          version: GATEWAY_VERSION,
          plural: 'gateways',
          name,
          body: { apiVersion: `${GATEWAY_GROUP}/${GATEWAY_VERSION}`, kind: 'Gateway', metadata: { name, resourceVersion: gw.metadata.resourceVersion }, status },
        }),
      );
      for (const [node, key] of publishedKeys(before)) if (!this.knownKeys.has(node)) this.knownKeys.set(node, key);
      const events = [...electionEvents(name, before, result), ...keyChangeEvents(name, this.knownKeys, status.activeEndpoints)];
      for (const [node, key] of publishedKeys(status.activeEndpoints)) this.knownKeys.set(node, key);
      this.recordOutcome(before, result.active, observableAt);
      for (const r of result.rejected) {
        if (before.some((e) => e.nodeName === r.node && e.type === r.type)) this.log.info('active endpoint rejected', { gateway: name, node: r.node, type: r.type, reason: r.reason });
      }
      if (result.dataPathFailover) {
        this.dataPathFailovers.set(name, now);
        this.log.warn('failed over for data-path evidence', { gateway: name, from: result.dataPathFailover.from, to: result.dataPathFailover.to, evidence: result.dataPathFailover.evidence });
        this.dataPathGauge.inc();
        this.scheduleRecheck(name, now + DATAPATH_HOLD_DOWN_MS);
      }
      await this.phase('events', () => this.emitEvents(gw, [...heldEvents, ...events]));
    } else if (heldEvents.length) await this.phase('events', () => this.emitEvents(gw, heldEvents));
    await this.phase('labels', () => this.syncLabels(name, new Set(members.map((m) => m.metadata.name)), nodes));
    await this.phase('exposure', () => this.syncExposure(name, desiredExposure(gw, result.active, status.nodes, this.opts.namespace)));
    this.scheduleExpiry(name, result.active.map((e) => e.nodeName), heartbeats, now);
  }

  /**
   * The L7 proxy's in-cluster entry, one key for the whole cluster: computed from every cached
   * Gateway's status, so it converges after each Gateway's own reconcile has written its status.
   */
  private async reconcileProxyEntry(): Promise<void> {
    const service = this.services?.get(PROXY_SERVICE_NAME, this.opts.namespace) as unknown as ServiceLike | undefined;
    const gateways = this.gatewayList().flatMap((g) => parseGateway(g).gateway ?? []);
    const entry = desiredProxyEntry({ gateways, l7Proxy: this.features().l7Proxy, service, namespace: this.opts.namespace });
    this.refusals.set(PROXY_ENTRY_KEY, entry.dropped);
    if (entry.none !== this.proxyEntryNone) {
      if (entry.none) this.log.info('L7 proxy entry has no endpoints', { service: PROXY_SERVICE_NAME, reason: entry.none });
      this.proxyEntryNone = entry.none;
    }
    await this.phase('proxy-entry', () => this.syncProxySlices(entry.slices));
  }

  /** Creates, updates and deletes the proxy entry's EndpointSlices; writes nothing when they already match. */
  private async syncProxySlices(desired: readonly EndpointSliceLike[]): Promise<void> {
    const ns = this.opts.namespace;
    const existing = new Map((this.proxySlices?.list() ?? []).filter((s) => s.metadata?.labels?.[SLICE_SERVICE_LABEL] === PROXY_SERVICE_NAME).map((s) => [s.metadata!.name!, s]));
    for (const d of desired) {
      const name = d.metadata.name;
      const have = existing.get(name);
      existing.delete(name);
      const addresses = d.endpoints.map((e) => e.addresses[0]).join(',');
      if (have && sameJSON(ownedSliceFields(have), ownedSliceFields(d))) continue;
      if (have && have.addressType === d.addressType) {
        await this.discovery.patchNamespacedEndpointSlice(
          { name, namespace: ns, body: { metadata: { labels: d.metadata.labels }, endpoints: d.endpoints, ports: d.ports } },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        );
      } else {
        // addressType is immutable: a slice of another family under our name is replaced.
        if (have) await ignoring([404], this.discovery.deleteNamespacedEndpointSlice({ name, namespace: ns }));
        await ignoring([409], this.discovery.createNamespacedEndpointSlice({ namespace: ns, body: d as unknown as k8s.V1EndpointSlice }));
      }
      this.log.info('pointed the L7 proxy entry at the active proxy endpoints', { slice: name, addresses });
    }
    for (const name of existing.keys()) {
      await ignoring([404], this.discovery.deleteNamespacedEndpointSlice({ name, namespace: ns }));
      this.log.info('removed an EndpointSlice of the L7 proxy entry', { slice: name });
    }
  }

  /**
   * Whether an expired heartbeat is evidence now (see election.ts, "Static stability"): enters and
   * leaves the heartbeat disruption (gauge, one warning and one Event on entry), and gives the
   * reason to hold failovers back, if any.
   */
  private holdReason(heartbeats: ReadonlyMap<string, Heartbeat>, byNode: ReadonlyMap<string, string>, now: number): string | undefined {
    const candidates = (this.candidates ??= clusterCandidates(this.gatewayList(), byNode));
    this.graceMs = sightGraceMs(candidates.flatMap((c) => heartbeats.get(c.node) ?? []));
    const d = heartbeatDisruption(candidates, heartbeats, now);
    if (d.disrupted && !this.disruption) {
      this.disruption = d;
      this.disruptionGauge.set(1);
      this.log.warn('heartbeat disruption: a large share of the cluster\'s heartbeats lapsed together; treating it as a control-plane fault and failing nothing over for expired heartbeats until they are fresh again', { evidence: d.evidence });
      this.pendingEvent = { reason: 'HeartbeatDisruption', message: `heartbeat disruption: ${d.evidence}; no gateway fails over for an expired heartbeat until heartbeats are fresh again`, sending: false };
    } else if (!d.disrupted && this.disruption) {
      this.disruption = undefined;
      this.disruptionGauge.set(0);
      this.log.info('heartbeat disruption over', { evidence: d.evidence });
      this.regainSight('heartbeats fresh again after a disruption', now);
    }
    this.flushClusterEvent();
    return holdReason({ ...(this.sightSince !== undefined && { since: this.sightSince, why: this.sightWhy }), graceMs: this.graceMs, disruption: d }, now);
  }

  /**
   * The controller (again) sees heartbeats arrive: for `graceMs` an expired heartbeat is no
   * evidence, then every Gateway is checked again (held actives whose agents did not renew fail over).
   */
  private regainSight(why: string, now = this.clock.now()): void {
    this.sightSince = now;
    this.sightWhy = why;
    this.log.info('regained sight of heartbeats; expired heartbeats fail nothing over until the grace ends', { why, graceMs: this.graceMs });
    clearTimeout(this.graceTimer);
    if (this.stopped) return;
    this.graceTimer = setTimeout(() => {
      if (!this.stopped) this.enqueueAll();
    }, this.graceMs + 1);
    this.graceTimer.unref();
  }

  /**
   * Logs each held failover once, with its evidence, and counts it; returns a Warning Event for each
   * newly held data-path failover (an operator should see that a gateway is failing with nowhere to go).
   */
  private logHeld(gateway: string, held: ElectionResult['held']): ElectionEvent[] {
    const key = held.map((h) => `${h.type}/${h.node}/${h.reason.startsWith(DATA_PATH_PREFIX) ? 'data-path' : 'expired'}`).join(',');
    if (this.heldLogged.get(gateway) === key) return [];
    if (!key) {
      this.heldLogged.delete(gateway);
      return [];
    }
    this.heldLogged.set(gateway, key);
    const events: ElectionEvent[] = [];
    for (const h of held) {
      const dataPath = h.reason.startsWith(DATA_PATH_PREFIX);
      this.heldFailovers.inc({ reason: dataPath ? 'data-path' : this.disruption ? 'disruption' : 'grace' });
      this.log.warn('held back a failover', { gateway, node: h.node, type: h.type, reason: h.reason });
      if (dataPath) events.push({ type: 'Warning', reason: 'FailoverHeld', message: `${h.type} endpoint ${h.node} of ${gateway} kept: ${h.reason}` });
    }
    return events;
  }

  /** Checks a Gateway again at `at` (the end of a hold-down), whatever else happens meanwhile. */
  private scheduleRecheck(name: string, at: number): void {
    const timer = setTimeout(() => {
      if (!this.stopped) this.enqueue(name);
    }, Math.max(0, at - this.clock.now()) + 1);
    timer.unref();
  }

  /** Heartbeats expire without any event: re-check the Gateway the moment its active's heartbeat lapses. */
  private scheduleExpiry(name: string, active: string[], heartbeats: ReadonlyMap<string, Heartbeat>, now: number): void {
    // An expiry already past is a held active: the end of the grace or of the disruption re-checks it.
    const next = Math.min(...active.map((n) => heartbeats.get(n)).filter((h): h is Heartbeat => !!h).map(expiresAt).filter((t) => t > now));
    const pending = this.expiryTimers.get(name);
    if (pending?.at === next) return;
    if (pending) clearTimeout(pending.timer);
    this.expiryTimers.delete(name);
    if (!Number.isFinite(next) || this.stopped) return;
    const timer = setTimeout(() => {
      this.expiryTimers.delete(name);
      if (!this.stopped) this.enqueue(name, next);
    }, Math.max(0, next - now) + 1);
    timer.unref();
    this.expiryTimers.set(name, { at: next, timer });
  }

  private recordOutcome(before: readonly { nodeName: string; type: string }[], after: readonly { nodeName: string; type: string }[], observableAt: number | undefined): void {
    const key = (e: { nodeName: string; type: string }): string => `${e.type}/${e.nodeName}`;
    const was = new Set(before.map(key));
    const is = new Set(after.map(key));
    for (const e of after) if (!was.has(key(e))) this.elections.inc({ type: e.type });
    const replaced = before.filter((e) => !is.has(key(e)) && after.some((a) => a.type === e.type));
    for (const e of replaced) this.failovers.inc({ type: e.type });
    if (replaced.length && observableAt !== undefined) this.decision.observe((Date.now() - observableAt) / 1000);
  }

  /** Records the pending cluster-wide Warning, on the raven namespace; kept for the next reconcile if the API refuses it. */
  private flushClusterEvent(): void {
    const e = this.pendingEvent;
    if (!e || e.sending) return;
    e.sending = true;
    void this.emitClusterEvent(e.reason, e.message).then((ok) => {
      e.sending = false;
      if (ok && this.pendingEvent === e) this.pendingEvent = undefined;
    });
  }

  private async emitClusterEvent(reason: string, message: string): Promise<boolean> {
    const now = new Date(this.clock.now());
    const ns = this.opts.namespace;
    try {
      await this.core.createNamespacedEvent({
        namespace: ns,
        body: {
          metadata: { generateName: 'raven-controller.', namespace: ns },
          involvedObject: { apiVersion: 'v1', kind: 'Namespace', name: ns },
          reason,
          message,
          type: 'Warning',
          source: { component: 'raven-controller' },
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
      return true;
    } catch (err) {
      this.log.warn('failed to record an event; will retry', { reason, error: describe(err) });
      return false;
    }
  }

  private async emitEvents(gw: Gateway, events: ReturnType<typeof electionEvents>): Promise<void> {
    for (const e of events) {
      const now = new Date();
      await this.core.createNamespacedEvent({
        namespace: 'default',
        body: {
          metadata: { generateName: `${gw.metadata.name}.` , namespace: 'default' },
          involvedObject: { apiVersion: `${GATEWAY_GROUP}/${GATEWAY_VERSION}`, kind: 'Gateway', name: gw.metadata.name, ...(gw.metadata.uid && { uid: gw.metadata.uid }) },
          reason: e.reason,
          message: e.message,
          type: e.type,
          source: { component: 'raven-controller' },
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
      this.log.info(e.message, { reason: e.reason });
    }
  }

  /** Members carry `raven.openyurt.io/gateway=<gw>` (OpenYurt compatibility); former members lose it. */
  private async syncLabels(gateway: string, members: ReadonlySet<string>, nodes: readonly NodeLike[]): Promise<void> {
    for (const n of nodes) {
      const current = n.metadata.labels?.[GATEWAY_LABEL];
      const want = members.has(n.metadata.name);
      if (want && current !== gateway) await this.patchLabel(n.metadata.name, gateway);
      else if (!want && current === gateway) await this.patchLabel(n.metadata.name, null);
    }
  }

  /**
   * Creates, updates and deletes this Gateway's LoadBalancer Services and their EndpointSlices.
   * Updates touch only the fields we own, so cloud-assigned ones (clusterIP, nodePorts) survive.
   */
  private async syncExposure(gateway: string, desired: readonly Exposed[]): Promise<void> {
    const ns = this.opts.namespace;
    const existing = new Map((this.services?.list() ?? []).filter((s) => s.metadata?.labels?.[EXPOSURE_GATEWAY_LABEL] === gateway).map((s) => [s.metadata!.name!, s]));
    for (const d of desired) {
      const name = d.service.metadata.name;
      const have = existing.get(name);
      existing.delete(name);
      if (!have) {
        await ignoring([409], this.core.createNamespacedService({ namespace: ns, body: d.service as k8s.V1Service }));
        await ignoring([409], this.discovery.createNamespacedEndpointSlice({ namespace: ns, body: d.slice as unknown as k8s.V1EndpointSlice }));
        this.log.info('exposed active endpoint', { gateway, service: name });
        continue;
      }
      const spec = d.service.spec as { type: string; externalTrafficPolicy: string; ports: unknown[] };
      if (have.spec?.type !== spec.type || have.spec?.externalTrafficPolicy !== spec.externalTrafficPolicy || !sameJSON(portsOf(have), spec.ports)) {
        await this.core.patchNamespacedService({ name, namespace: ns, body: { spec } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
      }
      await this.discovery.patchNamespacedEndpointSlice(
        { name, namespace: ns, body: { endpoints: (d.slice as { endpoints: unknown }).endpoints, ports: (d.slice as { ports: unknown }).ports } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      ).catch(async (err: unknown) => {
        if (code(err) !== 404) throw err;
        await ignoring([409], this.discovery.createNamespacedEndpointSlice({ namespace: ns, body: d.slice as unknown as k8s.V1EndpointSlice }));
      });
    }
    for (const name of existing.keys()) {
      await ignoring([404], this.core.deleteNamespacedService({ name, namespace: ns }));
      await ignoring([404], this.discovery.deleteNamespacedEndpointSlice({ name, namespace: ns }));
      this.log.info('removed exposure of a former active endpoint', { gateway, service: name });
    }
  }

  private async patchLabel(node: string, value: string | null): Promise<void> {
    await this.core.patchNode(
      { name: node, body: { metadata: { labels: { [GATEWAY_LABEL]: value } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
  }

  private async phase<T>(phase: (typeof PHASES)[number], f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      const verb = { read: 'read state', status: 'write status', events: 'record events', labels: 'label nodes', exposure: 'expose endpoints', 'proxy-entry': 'point the L7 proxy entry at its endpoints' }[phase];
      const wrapped = new Error(`failed to ${verb}: ${describe(err)}`, { cause: err });
      (wrapped as Error & { phase: string }).phase = phase;
      throw wrapped;
    }
  }
}

function portsOf(svc: k8s.V1Service): unknown[] {
  return (svc.spec?.ports ?? []).map((p) => ({ name: p.name, protocol: p.protocol, port: p.port, targetPort: p.targetPort }));
}

function sameJSON(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Awaits `p`, treating the given HTTP status codes (409 AlreadyExists, 404 NotFound) as done. */
async function ignoring<T>(codes: readonly number[], p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if (codes.includes(code(err) ?? 0)) return undefined;
    throw err;
  }
}

function normalizeStatus(s: Gateway['status'] | undefined): unknown {
  return { activeEndpoints: s?.activeEndpoints ?? [], nodes: s?.nodes ?? [] };
}

function describe(err: unknown): string {
  const c = code(err);
  const body = (err as { body?: unknown }).body;
  const msg = typeof body === 'string' ? body : body && typeof body === 'object' ? (body as { message?: string }).message : undefined;
  return c ? `HTTP ${c}${msg ? `: ${msg}` : ''}` : (err as Error).message ?? String(err);
}
