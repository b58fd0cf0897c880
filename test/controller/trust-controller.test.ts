/**
 * Trust boundaries on the controller's side: what a node, an agent or anyone who can write a Lease
 * may claim, and what the controller believes. Each case is an attack from issue 10, reproduced
 * against the pure core and against a real `raven controller` on the embedded API server.
 */
import * as k8s from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { activeOf, type Cluster, type ControllerProcess, metric, NS, startCluster, startController, waitFor } from '../support/cluster-harness.ts';
import { elect } from '../../src/controller/election.ts';
import { keyChangeEvents, publishedKeys } from '../../src/controller/election.ts';
import { parseNodeInfo } from '../../src/controller/status.ts';
import { ingressAddress } from '../../src/controller/exposure.ts';
import type { Gateway, NodeLike } from '../../src/contract/gateway.ts';
import { encodeHealth, HEALTH_ANNOTATION, type Heartbeat, heartbeatFromLease, leaseName, MAX_LEASE_SECONDS, parseHealth, parseHeartbeat } from '../../src/contract/heartbeat.ts';
import { LeaderElector } from '../../src/platform/leader-election.ts';
import { HOSTILE_CIDRS, HOSTILE_INTERNAL_IPS } from '../support/hostile-values.ts';

const KEY = Buffer.alloc(32, 'honest').toString('base64');
const EVIL_KEY = Buffer.alloc(32, 'evil').toString('base64');
const NOW = Date.parse('2026-12-02T06:00:00Z');

const node = (name: string, ips: string[], cidrs: string[]): NodeLike => ({
  metadata: { name },
  spec: { podCIDRs: cidrs },
  status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: ips.map((address) => ({ type: 'InternalIP', address })) },
});

test('every hostile InternalIP is refused and reported; the first good one is used; good ranges next to bad ones are kept', () => {
  for (const bad of HOSTILE_INTERNAL_IPS) {
    const r = parseNodeInfo(node('n1', [bad, '192.168.1.14'], ['10.98.0.0/24']));
    assert.is(r.info.privateIP, '192.168.1.14', JSON.stringify(bad));
    if (bad) assert.equal(r.dropped.map((d) => d.kind), ['node-ip'], JSON.stringify(bad));
  }
  const r = parseNodeInfo(node('n1', ['192.168.1.14'], [...HOSTILE_CIDRS, '10.98.0.0/24', 'FD00:0:0:1::/64']));
  assert.equal(r.info.subnets, ['10.98.0.0/24', 'fd00:0:0:1::/64']);
  assert.is(r.dropped.length, HOSTILE_CIDRS.length);
  assert.ok(r.dropped.every((d) => !d.reason.includes('\n')), 'reasons are escaped: no forged log lines');
});

test('a hostname LoadBalancer ingress (as on AWS) gives no publicIP, with the reason, instead of a name where peers expect an address', () => {
  assert.equal(ingressAddress({ metadata: { name: 's' }, status: { loadBalancer: { ingress: [{ hostname: 'abc.elb.amazonaws.com' }] } } }).ip, undefined);
  assert.match(ingressAddress({ metadata: { name: 's' }, status: { loadBalancer: { ingress: [{ hostname: 'abc.elb.amazonaws.com' }] } } }).refused ?? '', /hostname/);
  assert.is(ingressAddress({ metadata: { name: 's' }, status: { loadBalancer: { ingress: [{ hostname: 'x' }, { ip: '198.51.100.7' }] } } }).ip, '198.51.100.7');
});

const lease = (name: string, holder: string | undefined, renew: number, duration = 2, health?: object): k8s.V1Lease => ({
  metadata: { name, annotations: health ? { [HEALTH_ANNOTATION]: JSON.stringify({ v: 1, backendUp: true, peers: {}, ...health }) } : {} },
  spec: { ...(holder !== undefined && { holderIdentity: holder }), renewTime: new k8s.V1MicroTime(renew), leaseDurationSeconds: duration },
});

test('heartbeats: the holder must be the node; renewals in the future are refused; durations are bounded; honest ones pass', () => {
  const cases: [string, k8s.V1Lease, string | null][] = [
    ['honest renewal', lease('raven-agent-hz-1', 'hz-1', NOW - 500, 2, { publicKey: KEY }), null],
    ['a heartbeat for hz-1 written by another holder', lease('raven-agent-hz-1', 'hz-2', NOW), 'holder'],
    ['no holder at all', lease('raven-agent-hz-1', undefined, NOW), 'holder'],
    ['a renewal ten years ahead', lease('raven-agent-hz-1', 'hz-1', NOW + 10 * 365 * 86_400_000), 'in the future'],
    ['a node name that is no name', lease('raven-agent-HZ_1', 'HZ_1', NOW), 'not a node name'],
  ];
  for (const [what, l, refused] of cases) {
    const r = parseHeartbeat(l, NOW);
    if (refused === null) assert.ok(r.heartbeat, what);
    else {
      assert.is(r.heartbeat, undefined, what);
      assert.match(r.refused ?? '', refused, what);
    }
  }
  assert.is(heartbeatFromLease(lease('raven-agent-hz-1', 'hz-1', NOW, 10 * 365 * 86_400), NOW)!.leaseDurationSeconds, MAX_LEASE_SECONDS, 'a ten-year lease is cut');
  assert.is(heartbeatFromLease(lease('raven-agent-hz-1', 'hz-1', NOW + 1500), NOW)!.renewTime, NOW, 'a small clock skew counts as now');
  assert.is(heartbeatFromLease(lease('raven-controller', 'evil', NOW)), undefined, 'not a heartbeat Lease at all');
});

test('health: a garbage key, oversized reports, observations stamped in the future and hostile peer names are not believed', () => {
  const h = (o: object): string => JSON.stringify({ v: 1, backendUp: true, peers: {}, ...o });
  assert.is(parseHealth(h({ publicKey: 'AAAA; wg set raven-wg0 peer x remove' }), NOW)!.publicKey, undefined);
  assert.is(parseHealth(h({ publicKey: KEY }), NOW)!.publicKey, KEY);
  assert.is(parseHealth(h({ pad: 'x'.repeat(300 * 1024) }), NOW), undefined);
  assert.is(parseHealth(h({ activeGateway: { node: 'hz-1', reachable: false, lanReachable: true, observedAt: NOW + 3_600_000 } }), NOW)!.activeGateway, undefined, 'an observation from the future would stay fresh forever');
  assert.equal(Object.keys(parseHealth(h({ peers: { 'gw-ok': { rttMs: 1 }, 'gw bad\nline': { rttMs: 1 }, 'gw-neg': { rttMs: -5, loss: 7 } } }), NOW)!.peers), ['gw-ok', 'gw-neg']);
  assert.equal(parseHealth(h({ peers: { 'gw-neg': { rttMs: -5, loss: 7 } } }), NOW)!.peers['gw-neg'], {}, 'out-of-range numbers are dropped');
});

function gateway(): Gateway {
  return {
    metadata: { name: 'gw-hz' },
    spec: { endpoints: [{ nodeName: 'hz-1', type: 'tunnel', port: 4500 }, { nodeName: 'hz-2', type: 'tunnel', port: 4500 }], tunnelConfig: { Replicas: 1 } },
    status: { activeEndpoints: [{ nodeName: 'hz-1', type: 'tunnel', port: 4500 }] },
  };
}

test('a forged standby report (a Lease for hz-2 written by someone else) no longer moves the gateway', () => {
  const nodes = new Map(['hz-1', 'hz-2'].map((n) => [n, node(n, ['192.168.1.1'], [])]));
  const memberOf = new Map([['hz-1', 'gw-hz'], ['hz-2', 'gw-hz']]);
  const report = { activeGateway: { node: 'hz-1', reachable: false, lanReachable: true, observedAt: NOW } };
  const heartbeats = (standbyHolder: string): Map<string, Heartbeat> => {
    const out = new Map<string, Heartbeat>();
    for (const [n, holder, health] of [['hz-1', 'hz-1', {}], ['hz-2', standbyHolder, report]] as const) {
      const hb = heartbeatFromLease(lease(leaseName(n), holder, NOW, 2, health), NOW);
      if (hb) out.set(n, hb);
    }
    return out;
  };
  const run = (holder: string): string[] => elect({ gateway: gateway(), nodes, memberOf, heartbeats: heartbeats(holder), features: { l3Tunnel: true, l7Proxy: true }, now: NOW }).active.map((e) => e.nodeName);
  assert.equal(run('hz-2'), ['hz-2'], 'the honest standby\'s report moves the gateway (as before)');
  assert.equal(run('attacker'), ['hz-1'], 'a report under another holder is not believed');
});

test('a changed WireGuard key of a node raises a Warning event; an unchanged one does not', () => {
  const ep = (key: string, staged?: string) => [{ nodeName: 'hz-1', type: 'tunnel' as const, config: { publicKey: key, ...(staged && { 'raven-gitops.io/standby-public-keys': JSON.stringify({ 'hz-2': staged }) }) } }];
  const known = publishedKeys(ep(KEY, KEY));
  assert.equal(keyChangeEvents('gw-hz', known, ep(KEY, KEY)), []);
  const events = keyChangeEvents('gw-hz', known, ep(EVIL_KEY, KEY));
  assert.equal(events.map((e) => [e.type, e.reason]), [['Warning', 'PublicKeyChanged']]);
  assert.match(events[0]!.message, /hz-1/);
  assert.equal(keyChangeEvents('gw-hz', known, ep(KEY, EVIL_KEY)).map((e) => e.message.split(' ')[1]), ['hz-2'], 'staged standby keys too');
  assert.equal(keyChangeEvents('gw-hz', new Map(), ep(EVIL_KEY)), [], 'a first key is no change');
});

let cluster: Cluster;
let controller: ControllerProcess | undefined;
let agents: NodeJS.Timeout | undefined;
const keys = new Map<string, string>();

test.before(async () => {
  cluster = await startCluster();
  const tick = async (): Promise<void> => {
    await Promise.all(['cloud-gw-1', 'hz-1', 'hz-2', 'qd-1', 'qd-2'].map((n) => cluster.beat(n, keys.has(n) ? { publicKey: keys.get(n)! } : {}).catch(() => undefined)));
    agents = setTimeout(() => void tick(), 300);
  };
  void tick();
});

test.after(async () => {
  clearTimeout(agents);
  await controller?.kill();
  await cluster?.close();
});

test('a leader Lease forged with a ten-year duration and a renewal in the future holds off a real replica for one lease duration, not ten years', async () => {
  const coordination = cluster.coordination;
  const future = new k8s.V1MicroTime(Date.now() + 10 * 365 * 86_400_000);
  await coordination.createNamespacedLease({ namespace: NS, body: { metadata: { name: 'raven-controller', namespace: NS }, spec: { holderIdentity: 'attacker', leaseDurationSeconds: 315_360_000, renewTime: future, acquireTime: future } } });
  let led = 0;
  const started = Date.now();
  const elector = new LeaderElector(cluster.kc, { namespace: NS, name: 'raven-controller', identity: 'ctl-test', leaseDurationSeconds: 1, retryPeriodMs: 100, onStartedLeading: () => (led = Date.now()), onStoppedLeading: () => undefined, log: () => undefined });
  elector.start();
  try {
    await waitFor(() => led > 0, 5000, 'the replica to take the forged lease over');
    assert.ok(led - started >= 900, 'it waited one lease duration of its own');
    const l = await coordination.readNamespacedLease({ name: 'raven-controller', namespace: NS });
    assert.is(l.spec?.holderIdentity, 'ctl-test');
  } finally {
    await elector.stop();
    await coordination.deleteNamespacedLease({ name: 'raven-controller', namespace: NS });
  }
});

test('through the real controller: hostile Node addresses and ranges never reach Gateway status; neighbours do; refusals are counted', async () => {
  controller = await startController(cluster.kubeconfigFile);
  const merge = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
  const evil = HOSTILE_INTERNAL_IPS.map((_, i) => `qd-evil-${i}`);
  await cluster.custom.patchClusterCustomObject({ group: 'raven.openyurt.io', version: 'v1beta1', plural: 'gateways', name: 'gw-qingdao', body: { metadata: { annotations: { 'raven-gitops.io/member-nodes': ['qd-1', 'qd-2', ...evil, 'qd-ranges'].join(','), 'raven.openyurt.io/extra-allowed-source-cidrs': '0.0.0.0/0, 10.97.0.0/24,10.96.0.0/24\nx' } } } }, merge);
  const create = async (name: string, ip: string, cidrs: string[]): Promise<void> => {
    await cluster.core.createNode({ body: { metadata: { name }, spec: { podCIDRs: cidrs } } });
    await cluster.core.replaceNodeStatus({ name, body: { metadata: { name }, status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: ip }] } } as k8s.V1Node });
  };
  for (const [i, ip] of HOSTILE_INTERNAL_IPS.entries()) await create(evil[i]!, ip, [`10.98.${i}.0/24`]);
  await create('qd-ranges', '192.168.1.40', [...HOSTILE_CIDRS, '10.95.0.0/24']);
  const gw = await waitFor(async () => {
    const g = await cluster.gateway('gw-qingdao');
    // Nodes are created, then their status written: wait for the status of the last one, not only its creation.
    const last = g.status?.nodes?.find((n) => n.nodeName === 'qd-ranges');
    return g.status?.nodes?.length === 2 + evil.length + 1 && activeOf(g).length > 0 && last?.privateIP ? g : undefined;
  }, 10_000, () => `gw-qingdao status with every member; controller:\n${controller!.logs().slice(-2000)}`);
  const byName = new Map(gw.status!.nodes!.map((n) => [n.nodeName, n]));
  for (const [i] of HOSTILE_INTERNAL_IPS.entries()) assert.equal(byName.get(evil[i]!), { nodeName: evil[i]!, privateIP: '', subnets: [`10.98.${i}.0/24`] });
  assert.equal(byName.get('qd-ranges'), { nodeName: 'qd-ranges', privateIP: '192.168.1.40', subnets: ['10.95.0.0/24'] });
  const tunnel = gw.status!.activeEndpoints!.find((e) => e.type === 'tunnel')!.nodeName;
  assert.equal(byName.get(tunnel)!.subnets.filter((s) => s.startsWith('10.9')), ['10.97.0.0/24'], 'only the good extra source range');
  const text = JSON.stringify(gw.status);
  for (const bad of ['netns', '/tmp', '0.0.0.0', '128.0.0.0', 'table', '\\n', 'evil.example']) assert.not.ok(text.includes(bad), `status holds ${bad}`);
  const m = await controller.metrics();
  assert.ok(metric(m, 'raven_controller_refused_values{kind="node-ip"}') >= HOSTILE_INTERNAL_IPS.length - 1, m.split('\n').filter((l) => l.includes('refused')).join('\n'));
  assert.ok(metric(m, 'raven_controller_refused_values{kind="subnet"}') >= HOSTILE_CIDRS.length + 2);
  assert.ok(/refused a value.*node-ip/.test(controller.logs()), 'each refusal is logged');
  assert.not.ok(/\nroute add default|\nnetns exec/.test(controller.logs()), 'logged values are escaped');
});

test('through the real controller: a forged heartbeat cannot publish an attacker\'s key for a gateway; a key change is an event', async () => {
  keys.set('hz-1', KEY);
  const honest = await waitFor(async () => {
    const g = await cluster.gateway('gw-hangzhou');
    return g.status?.activeEndpoints?.find((e) => e.type === 'tunnel' && e.config?.publicKey === KEY) ? g : undefined;
  }, 5000, 'the honest key in status');
  const hz = honest.status!.activeEndpoints!.find((e) => e.type === 'tunnel')!.nodeName;
  assert.is(hz, 'hz-1');
  // A forger rewrites hz-1's Lease as itself, ahead of the honest agent's clock, with its own key.
  const forged = async (): Promise<void> => {
    const l = await cluster.coordination.readNamespacedLease({ name: leaseName('hz-1'), namespace: NS });
    l.spec = { ...l.spec, holderIdentity: 'attacker', renewTime: new k8s.V1MicroTime(Date.now() + 3_600_000), leaseDurationSeconds: 315_360_000 };
    l.metadata = { ...l.metadata, annotations: { [HEALTH_ANNOTATION]: encodeHealth({ backendUp: true, peers: {}, publicKey: EVIL_KEY }) } };
    await cluster.coordination.replaceNamespacedLease({ name: leaseName('hz-1'), namespace: NS, body: l }).catch(() => undefined);
  };
  let seenEvil = 0;
  for (let i = 0; i < 20; i++) {
    await forged();
    await new Promise((r) => setTimeout(r, 100));
    const g = await cluster.gateway('gw-hangzhou');
    if (JSON.stringify(g.status).includes(EVIL_KEY)) seenEvil++;
  }
  assert.is(seenEvil, 0, 'the forged key never reached status');
  assert.match(controller!.logs(), /heartbeat not believed.*raven-agent-hz-1/);
  // The node itself changes its key (reinstalled, or compromised): published, and an event says so.
  keys.set('hz-1', EVIL_KEY);
  await waitFor(async () => {
    const list = await cluster.core.listNamespacedEvent({ namespace: 'default' });
    return list.items.some((e) => e.involvedObject.name === 'gw-hangzhou' && e.reason === 'PublicKeyChanged' && e.type === 'Warning');
  }, 5000, 'a PublicKeyChanged event');
});

test.run();
