/**
 * The node agent process: watches Gateways, turns them into this node's plan, applies it to the
 * kernel (routes, WireGuard), and keeps its heartbeat Lease fresh with its health, its public key
 * and, on standbys, what it sees of the active gateway. A sync is level-based: every trigger
 * recomputes the whole plan and the executors apply only differences.
 */
import * as k8s from '@kubernetes/client-node';
import { BACKEND_OVERHEAD, GATEWAY_GROUP, GATEWAY_VERSION } from '../../topology/constants.js';
import type { Gateway } from '../gateway.js';
import { type ActiveGatewayObservation, CANDIDATE_LEASE_SECONDS, CANDIDATE_RENEW_MS, encodeHealth, HEALTH_ANNOTATION, leaseName, MEMBER_LEASE_SECONDS, MEMBER_RENEW_MS, type PeerHealth } from '../heartbeat.js';
import { serveEndpoints } from '../http-endpoints.js';
import { code } from '../leader-election.js';
import type { Logger } from '../log.js';
import { Counter, Gauge, Registry } from '../metrics.js';
import type { CommandRunner } from './command-runner.js';
import type { AgentConfig } from './config.js';
import { plan, type NodePlan } from './plan.js';
import { DEFAULT_ROUTE_TABLE, RouteTable } from './route-table.js';
import { WireGuard } from './wireguard.js';

/** Standby probes of the active gateway: often enough to report a dead gateway well inside a second. */
export const PROBE_PERIOD_MS = 500;
export const PROBE_TIMEOUT_MS = 300;

export class Agent {
  readonly registry = new Registry();
  private readonly syncs = this.registry.register(new Counter('raven_agent_sync_total', 'Plan applications by result.'));
  private readonly routesGauge = this.registry.register(new Gauge('raven_agent_routes', 'Routes in the agent\'s table.'));
  private readonly peersGauge = this.registry.register(new Gauge('raven_agent_tunnel_peers', 'Tunnel peers on this node.'));
  private readonly handshakeAge = this.registry.register(new Gauge('raven_agent_peer_handshake_age_seconds', 'Seconds since the last handshake, per remote gateway.'));
  private readonly activeReachable = this.registry.register(new Gauge('raven_agent_active_gateway_reachable', 'On standbys: 1 when the active gateway answers probes.'));

  private readonly routes: RouteTable;
  private readonly wireguard: WireGuard;
  private readonly coordination: k8s.CoordinationV1Api;
  private informer?: k8s.Informer<k8s.KubernetesObject> & k8s.ObjectCache<k8s.KubernetesObject>;
  private current: NodePlan = { role: 'outside', routes: [], peers: [], mtu: 0 };
  private backendUp = false;
  private observation?: ActiveGatewayObservation;
  private syncing?: Promise<void>;
  private again = false;
  private stopped = false;
  private timers: NodeJS.Timeout[] = [];
  private server?: { close(): void };
  port = 0;

  constructor(private readonly kc: k8s.KubeConfig, private readonly config: AgentConfig, private readonly runner: CommandRunner, private readonly log: Logger) {
    this.routes = new RouteTable(runner, { ...DEFAULT_ROUTE_TABLE, ...(config.netns && { netns: config.netns }) });
    const mtu = config.tunnelMTU || config.underlayMTU - BACKEND_OVERHEAD[config.vpnDriver];
    this.wireguard = new WireGuard({ device: config.device, port: config.vpnPort, mtu, stateDir: config.stateDir, runner, ...(config.netns && { netns: config.netns }) });
    this.coordination = kc.makeApiClient(k8s.CoordinationV1Api);
    for (const result of ['success', 'error']) this.syncs.init({ result });
  }

  async run(): Promise<void> {
    if (this.config.vpnDriver !== 'wireguard') throw new Error('the ipsec driver is not available in this version of the agent; use vpn-driver: wireguard');
    const { server, port } = await serveEndpoints(this.config.healthAddr, { healthy: () => !this.stopped, ready: () => !!this.informer, metrics: this.registry });
    this.server = server;
    this.port = port;
    const custom = this.kc.makeApiClient(k8s.CustomObjectsApi);
    const inf = k8s.makeInformer<k8s.KubernetesObject>(this.kc, `/apis/${GATEWAY_GROUP}/${GATEWAY_VERSION}/gateways`, () =>
      custom.listClusterCustomObject({ group: GATEWAY_GROUP, version: GATEWAY_VERSION, plural: 'gateways' }) as Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>,
    );
    let delay = 100;
    inf.on('error', (err) => {
      if (this.stopped) return;
      this.log.warn('gateway watch failed; restarting', { error: (err as Error)?.message, retryMs: delay });
      this.timers.push(setTimeout(() => void inf.start().catch(() => undefined), delay));
      delay = Math.min(delay * 2, 10_000);
    });
    for (const e of ['add', 'update', 'delete'] as const) inf.on(e, () => this.trigger());
    await inf.start();
    this.informer = inf;
    this.trigger();
    this.heartbeatLoop();
    this.probeLoop();
  }

  /** Level-based: one sync at a time; triggers during a sync cause exactly one more. */
  private trigger(): void {
    if (this.stopped) return;
    if (this.syncing) {
      this.again = true;
      return;
    }
    this.syncing = this.sync().finally(() => {
      this.syncing = undefined;
      if (this.again) {
        this.again = false;
        this.trigger();
      }
    });
  }

  private async sync(): Promise<void> {
    const gateways = (this.informer?.list() ?? []) as unknown as Gateway[];
    const next = plan(gateways, {
      node: this.config.nodeName,
      backend: this.config.vpnDriver,
      device: this.config.device,
      natTraversal: this.config.natTraversal,
      forwardNodeIP: this.config.forwardNodeIP,
      mtu: this.config.tunnelMTU,
      underlayMTU: this.config.underlayMTU,
    });
    try {
      if (next.role === 'gateway') {
        await this.wireguard.up();
        await this.wireguard.setPeers(next.peers);
      } else if (await this.wireguard.exists()) {
        await this.wireguard.down();
      }
      await this.routes.set(next.routes);
      // Healthy: the plan is in the kernel (on a gateway, the tunnel device is up with its peers).
      this.backendUp = true;
      if (next.role !== this.current.role || next.activeNode !== this.current.activeNode) {
        this.log.info('plan applied', { role: next.role, gateway: next.gateway ?? '', active: next.activeNode ?? '', routes: next.routes.length, peers: next.peers.length });
      }
      this.current = next;
      this.routesGauge.set(next.routes.length);
      this.peersGauge.set(next.peers.length);
      this.syncs.inc({ result: 'success' });
    } catch (err) {
      this.backendUp = false;
      this.syncs.inc({ result: 'error' });
      this.log.error('failed to apply plan', { error: (err as Error).message });
      this.timers.push(setTimeout(() => this.trigger(), 1000));
    }
  }

  private isCandidate(): boolean {
    const gws = (this.informer?.list() ?? []) as unknown as Gateway[];
    return gws.some((g) => (g.spec?.endpoints ?? []).some((e) => e.nodeName === this.config.nodeName));
  }

  private heartbeatLoop(): void {
    const tick = async (): Promise<void> => {
      if (this.stopped) return;
      const candidate = this.isCandidate();
      const started = Date.now();
      try {
        await this.beat(candidate);
      } catch (err) {
        this.log.warn('failed to renew heartbeat', { error: (err as Error).message });
      }
      // Fixed rate, not fixed delay: a slow renewal must not push the next one toward expiry.
      const period = candidate ? CANDIDATE_RENEW_MS : MEMBER_RENEW_MS;
      if (!this.stopped) this.timers.push(setTimeout(() => void tick(), Math.max(0, period - (Date.now() - started))));
    };
    void tick();
  }

  /** Standbys probe their active gateway on their own clock; the heartbeat carries the latest result. */
  private probeLoop(): void {
    const tick = async (): Promise<void> => {
      if (this.stopped) return;
      if (this.current.role === 'standby' || this.current.role === 'member') {
        await this.probeActive().catch(() => undefined);
      } else this.observation = undefined;
      if (!this.stopped) this.timers.push(setTimeout(() => void tick(), PROBE_PERIOD_MS));
    };
    void tick();
  }

  /** Standbys ping the active gateway and, to prove they are not the ones cut off, another member. */
  private async probeActive(): Promise<void> {
    const gws = (this.informer?.list() ?? []) as unknown as Gateway[];
    const mine = gws.find((g) => g.metadata.name === this.current.gateway);
    const active = this.current.activeNode;
    if (!mine || !active) return;
    const nodes = mine.status?.nodes ?? [];
    const activeIP = nodes.find((n) => n.nodeName === active)?.privateIP;
    const witness = nodes.find((n) => n.nodeName !== active && n.nodeName !== this.config.nodeName)?.privateIP;
    if (!activeIP) return;
    const [reachable, witnessed] = await Promise.all([this.ping(activeIP), witness ? this.ping(witness) : Promise.resolve(undefined)]);
    const lanReachable = witnessed ?? reachable;
    this.observation = { node: active, reachable, lanReachable, observedAt: Date.now() };
    this.activeReachable.set(reachable ? 1 : 0);
  }

  private async ping(ip: string): Promise<boolean> {
    const args = ['-c', '1', '-W', String(PROBE_TIMEOUT_MS / 1000), ip];
    const r = this.config.netns ? await this.runner.run('ip', ['netns', 'exec', this.config.netns, 'ping', ...args]) : await this.runner.run('ping', args);
    return r.code === 0;
  }

  private async beat(candidate: boolean): Promise<void> {
    const peers: Record<string, PeerHealth> = {};
    if (this.current.role === 'gateway') {
      const now = Date.now() / 1000;
      const byKey = new Map(this.current.peers.map((p) => [p.publicKey, p.gateway]));
      for (const p of await this.wireguard.peers()) {
        const gw = byKey.get(p.publicKey);
        if (!gw) continue;
        const age = p.latestHandshake > 0 ? Math.round(now - p.latestHandshake) : undefined;
        peers[gw] = age !== undefined ? { handshakeAgeSeconds: age } : {};
        if (age !== undefined) this.handshakeAge.set(age, { gateway: gw });
      }
    }
    const health = encodeHealth({
      backendUp: this.backendUp,
      peers,
      ...(this.observation && { activeGateway: this.observation }),
      ...(candidate && { publicKey: await this.wireguard.publicKey() }),
    });
    const name = leaseName(this.config.nodeName);
    const ns = this.config.namespace;
    const spec = { holderIdentity: this.config.nodeName, leaseDurationSeconds: candidate ? CANDIDATE_LEASE_SECONDS : MEMBER_LEASE_SECONDS, renewTime: new k8s.V1MicroTime() };
    try {
      const lease = await this.coordination.readNamespacedLease({ name, namespace: ns });
      lease.metadata = { ...lease.metadata, annotations: { ...(lease.metadata?.annotations ?? {}), [HEALTH_ANNOTATION]: health } };
      lease.spec = { ...lease.spec, ...spec };
      await this.coordination.replaceNamespacedLease({ name, namespace: ns, body: lease });
    } catch (err) {
      if (code(err) !== 404) throw err;
      await this.coordination.createNamespacedLease({ namespace: ns, body: { metadata: { name, namespace: ns, annotations: { [HEALTH_ANNOTATION]: health } }, spec } });
    }
  }

  /** Stops and removes everything this agent put on the node. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    await this.informer?.stop();
    await this.syncing;
    await this.routes.cleanUp();
    await this.wireguard.down();
    this.server?.close();
  }
}
