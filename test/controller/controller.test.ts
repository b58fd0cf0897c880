/**
 * The real controller process against the embedded API server over HTTP: what an operator sees in
 * `kubectl get gw`, node labels and events, through failures of gateways, watches, the API and the
 * controller itself.
 */
import * as k8s from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { activeOf, type Cluster, type ControllerProcess, metric, NODES, startCluster, startController, waitFor } from '../support/cluster-harness.ts';
import type { AgentHealth } from '../../src/contract/heartbeat.ts';

let cluster: Cluster;
let controller: ControllerProcess;
const alive = new Set(Object.keys(NODES));
const health = new Map<string, Partial<AgentHealth>>();
let agents: NodeJS.Timeout | undefined;

/** Plays every live node's agent: renews its heartbeat every 300 ms. */
function runAgents(): void {
  const tick = async (): Promise<void> => {
    await Promise.all([...alive].map((n) => cluster.beat(n, health.get(n)).catch(() => undefined)));
    agents = setTimeout(() => void tick(), 300);
  };
  void tick();
}

test.before(async () => {
  cluster = await startCluster();
  runAgents();
  controller = await startController(cluster.kubeconfigFile, ['--leader-elect', '--identity', 'ctl-a', '--lease-duration', '2s', '--retry-period', '200ms']);
});

test.after(async () => {
  clearTimeout(agents);
  await controller?.kill();
  await cluster?.close();
});

test('each region gets its first candidate elected, with OpenYurt-shaped status', async () => {
  const gw = await waitFor(async () => {
    const g = await cluster.gateway('gw-hangzhou');
    return activeOf(g).length === 2 ? g : undefined;
  }, 10_000, () => `gw-hangzhou to be elected; controller said:\n${controller.logs()}`);
  assert.equal(activeOf(gw), ['proxy/hz-1', 'tunnel/hz-1']);
  const tunnel = gw.status!.activeEndpoints!.find((e) => e.type === 'tunnel')!;
  assert.equal(tunnel.config, { 'enable-l3-tunnel': 'true' });
  assert.equal(gw.status!.nodes, [
    { nodeName: 'hz-1', privateIP: '192.168.1.11', subnets: ['10.244.1.0/24'] },
    { nodeName: 'hz-2', privateIP: '192.168.1.12', subnets: ['10.244.2.0/24'] },
  ]);
  const cloud = await waitFor(async () => ((await cluster.gateway('gw-cloud')).status?.activeEndpoints?.length === 2 ? cluster.gateway('gw-cloud') : undefined), 5000, 'gw-cloud');
  assert.equal(cloud.status!.activeEndpoints!.map((e) => e.publicIP), ['203.0.113.10', '203.0.113.10']);
});

test('the controller answers /healthz and /readyz', async () => {
  for (const path of ['/healthz', '/readyz']) assert.is((await fetch(`http://127.0.0.1:${controller.port}${path}`)).status, 200, path);
  const m = await controller.metrics();
  assert.ok(metric(m, 'nodejs_heap_size_used_bytes') > 0 && metric(m, 'process_resident_memory_bytes') > metric(m, 'nodejs_heap_size_used_bytes'), 'process memory is exported');
});

test('renewals that change nothing an election reads do not reconcile (news does, at once)', async () => {
  const reconciles = async (): Promise<number> => {
    const m = await controller.metrics();
    return metric(m, 'raven_controller_reconcile_total{result="success"}') + metric(m, 'raven_controller_reconcile_total{result="error"}');
  };
  const renewalsBefore = cluster.api.requests().filter((r) => r.method === 'PUT' && r.path.includes('/leases/')).length;
  const before = await reconciles();
  await new Promise((r) => setTimeout(r, 3000));
  const renewals = cluster.api.requests().filter((r) => r.method === 'PUT' && r.path.includes('/leases/')).length - renewalsBefore;
  const during = (await reconciles()) - before;
  // Each Gateway is still checked when its active's lease runs out (a timer, 2 s leases here).
  assert.ok(renewals >= 40 && during * 4 < renewals, `${during} reconciles for ${renewals} renewals`);
});

test('a LoadBalancer region gets a Service per active endpoint, and its publicIP from the ingress', async () => {
  const patch = { spec: { exposeType: 'LoadBalancer', endpoints: [{ nodeName: 'cloud-gw-1', type: 'tunnel', port: 4500, underNAT: false }, { nodeName: 'cloud-gw-1', type: 'proxy', port: 10262, underNAT: false }] } };
  const merge = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
  const patchGw = (body: object): Promise<unknown> => cluster.custom.patchClusterCustomObject({ group: 'raven.openyurt.io', version: 'v1beta1', plural: 'gateways', name: 'gw-cloud', body }, merge);
  const original = await cluster.gateway('gw-cloud');
  await patchGw(patch);
  const svc = await waitFor(async () => (await cluster.core.listNamespacedService({ namespace: 'raven-system' })).items.find((x) => x.metadata?.name === 'raven-tunnel-cloud-cloud-gw-1'), 5000, 'the tunnel LoadBalancer Service');
  assert.is(svc.spec?.type, 'LoadBalancer');
  assert.equal(svc.spec?.ports?.map((p) => [p.protocol, p.port]), [['UDP', 4500]]);
  // The controller creates the Service, then its EndpointSlice: the slice may land a moment later.
  const discovery = cluster.kc.makeApiClient(k8s.DiscoveryV1Api);
  const slice = await waitFor(() => discovery.readNamespacedEndpointSlice({ name: 'raven-tunnel-cloud-cloud-gw-1', namespace: 'raven-system' }), 5000, 'the tunnel EndpointSlice');
  assert.equal(slice.endpoints.map((e) => e.addresses), [['10.0.0.10']]);
  let gw = await cluster.gateway('gw-cloud');
  assert.is(gw.status?.activeEndpoints?.find((e) => e.type === 'tunnel')?.publicIP, undefined, 'no address before the cloud assigns one');
  // Play the cloud provider: assign an ingress address.
  await cluster.core.replaceNamespacedServiceStatus({ name: svc.metadata!.name!, namespace: 'raven-system', body: { ...svc, status: { loadBalancer: { ingress: [{ ip: '198.51.100.200' }] } } } });
  gw = await waitFor(async () => {
    const g = await cluster.gateway('gw-cloud');
    return g.status?.activeEndpoints?.find((e) => e.type === 'tunnel')?.publicIP === '198.51.100.200' ? g : undefined;
  }, 5000, 'publicIP from the LoadBalancer ingress');
  // Back to PublicIP: the Services go away.
  await patchGw({ spec: { exposeType: original.spec!.exposeType, endpoints: original.spec!.endpoints } });
  await waitFor(async () => (await cluster.core.listNamespacedService({ namespace: 'raven-system' })).items.every((x) => !x.metadata?.name?.startsWith('raven-')), 5000, 'LoadBalancer Services removed');
});

test('members are labelled raven.openyurt.io/gateway=<gw>, by selector and by name', async () => {
  await waitFor(async () => (await cluster.core.readNode({ name: 'qd-2' })).metadata?.labels?.['raven.openyurt.io/gateway'] === 'gw-qingdao', 5000, 'qd-2 label');
  const cloud = await cluster.core.readNode({ name: 'cloud-gw-1' });
  assert.is(cloud.metadata?.labels?.['raven.openyurt.io/gateway'], 'gw-cloud');
});

test('a dead active gateway (heartbeat stops) fails over to the standby, with events and metrics', async () => {
  const before = metric(await controller.metrics(), 'raven_controller_failovers_total{type="tunnel"}');
  alive.delete('hz-1');
  const gw = await waitFor(async () => {
    const g = await cluster.gateway('gw-hangzhou');
    return activeOf(g).includes('tunnel/hz-2') ? g : undefined;
  }, 6000, 'failover to hz-2');
  assert.equal(activeOf(gw), ['proxy/hz-2', 'tunnel/hz-2']);
  const events = await waitFor(async () => {
    const list = await cluster.core.listNamespacedEvent({ namespace: 'default' });
    const mine = list.items.filter((e) => e.involvedObject.name === 'gw-hangzhou');
    return mine.some((e) => e.reason === 'ActiveEndpointLost') && mine.some((e) => e.reason === 'ActiveEndpointElected' && /hz-2/.test(e.message ?? '')) ? mine : undefined;
  }, 3000, 'events');
  assert.ok(events.some((e) => e.reason === 'ActiveEndpointLost' && /hz-1.*heartbeat expired/.test(e.message ?? '')), JSON.stringify(events.map((e) => e.message)));
  assert.ok(events.some((e) => e.reason === 'ActiveEndpointElected' && /hz-2/.test(e.message ?? '')));
  // The status write lands before the controller counts it: wait for the counters.
  await waitFor(async () => {
    const m = await controller.metrics();
    return metric(m, 'raven_controller_failovers_total{type="tunnel"}') > before && metric(m, 'raven_controller_decision_latency_seconds_count') >= 1;
  }, 3000, 'failover and decision-latency metrics');
});

test('when the old gateway returns, the new one stays active (sticky)', async () => {
  alive.add('hz-1');
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(activeOf(await cluster.gateway('gw-hangzhou')), ['proxy/hz-2', 'tunnel/hz-2']);
});

test('a healthy standby reporting the active unreachable triggers failover; one cut off from its LAN does not', async () => {
  health.set('qd-2', { activeGateway: { node: 'qd-1', reachable: false, lanReachable: false, observedAt: Date.now() } });
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(activeOf(await cluster.gateway('gw-qingdao')), ['proxy/qd-1', 'tunnel/qd-1'], 'a cut-off standby must not move the gateway');
  const reportedAt = Date.now();
  health.set('qd-2', { activeGateway: { node: 'qd-1', reachable: false, lanReachable: true, observedAt: reportedAt } });
  await waitFor(async () => activeOf(await cluster.gateway('gw-qingdao')).includes('tunnel/qd-2'), 3000, 'failover to qd-2 on the standby report');
  health.delete('qd-2');
});

test('a Calico node\'s subnets are its confirmed BlockAffinities', async () => {
  await cluster.core.createNode({ body: { metadata: { name: 'cloud-2', labels: { 'apps.openyurt.io/nodepool': 'cloud' }, annotations: { 'projectcalico.org/IPv4Address': '10.0.0.11/24' } } } });
  await cluster.core.replaceNodeStatus({ name: 'cloud-2', body: { metadata: { name: 'cloud-2' }, status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: '10.0.0.11' }] } } });
  for (const [name, cidr, state] of [['b1', '10.244.9.0/26', 'confirmed'], ['b2', '10.244.9.64/26', 'pending']]) {
    await cluster.objects.create({ apiVersion: 'crd.projectcalico.org/v1', kind: 'BlockAffinity', metadata: { name }, spec: { node: 'cloud-2', cidr, state } } as never);
  }
  const info = await waitFor(async () => (await cluster.gateway('gw-cloud')).status?.nodes?.find((n) => n.nodeName === 'cloud-2' && n.subnets.length > 0), 5000, 'cloud-2 in gw-cloud status');
  assert.equal(info, { nodeName: 'cloud-2', privateIP: '10.0.0.11', subnets: ['10.244.9.0/26'] });
});

test('dropped watches, an expired watch history (410 Gone → relist) and API errors are survived', async () => {
  cluster.api.clearRequests();
  // A write after the Gateway informer's last event, so compacting leaves that informer behind.
  await cluster.beat('cloud-gw-1');
  cluster.api.faults.compact();
  cluster.api.faults.dropWatches();
  const fail = cluster.api.faults.failNext({ method: 'PUT', path: /\/gateways\/gw-hangzhou\/status/, count: 3, status: 500 });
  alive.delete('hz-2');
  await waitFor(async () => activeOf(await cluster.gateway('gw-hangzhou')).includes('tunnel/hz-1'), 8000, () => `failover back to hz-1 despite faults; logs:\n${controller.logs().slice(-3000)}`);
  assert.is(fail.hits, 3, 'the status write was retried through three 500s');
  await waitFor(
    () => cluster.api.requests().some((r) => r.method === 'GET' && !r.watch && r.path === '/apis/raven.openyurt.io/v1beta1/gateways' && r.status === 200),
    5000,
    () => `the Gateway informer to relist after its watch history expired; gateway requests: ${JSON.stringify(cluster.api.requests().filter((r) => r.path.includes('gateways') && !r.path.includes('status')))}`,
  );
  assert.ok(metric(await controller.metrics(), 'raven_controller_reconcile_errors_total{phase="status"}') >= 3);
  alive.add('hz-2');
});

test('a conflicting writer\'s status is corrected (409 on the stale write, then a fresh retry)', async () => {
  const gw = await cluster.gateway('gw-cloud');
  await cluster.custom.replaceClusterCustomObjectStatus({ group: 'raven.openyurt.io', version: 'v1beta1', plural: 'gateways', name: 'gw-cloud', body: { ...gw, status: { activeEndpoints: [{ nodeName: 'intruder', type: 'tunnel' }], nodes: [] } } });
  await waitFor(async () => activeOf(await cluster.gateway('gw-cloud')).join() === 'proxy/cloud-gw-1,tunnel/cloud-gw-1', 5000, 'status restored');
});

test('killing the leader hands control to the second replica, which keeps electing', async () => {
  const second = await startController(cluster.kubeconfigFile, ['--leader-elect', '--identity', 'ctl-b', '--lease-duration', '2s', '--retry-period', '200ms']);
  try {
    assert.is(metric(await second.metrics(), 'raven_controller_leader'), 0, 'the second replica waits while the first leads');
    await controller.kill('SIGKILL');
    await waitFor(async () => metric(await second.metrics(), 'raven_controller_leader') === 1, 6000, 'ctl-b to lead');
    alive.delete('qd-2');
    alive.delete('qd-1');
    await waitFor(async () => activeOf(await cluster.gateway('gw-qingdao')).length === 0, 6000, 'the new leader to act on a change');
    alive.add('qd-1');
    alive.add('qd-2');
  } finally {
    controller = second;
  }
});

test.run();
