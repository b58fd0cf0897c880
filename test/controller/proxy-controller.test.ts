/**
 * The real controller process keeping the L7 proxy's in-cluster entry, `x-raven-proxy-internal-svc`
 * (compiled without a selector), pointed at the cloud's active proxy endpoint: through a failover,
 * someone deleting its EndpointSlice, and L7 proxy being turned off.
 */
import { readFileSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { activeOf, type Cluster, type ControllerProcess, NODES, NS, startCluster, startController, waitFor } from '../support/cluster-harness.ts';

const SLICE = 'x-raven-proxy-internal-svc-ipv4';
let cluster: Cluster;
let controller: ControllerProcess;
let discovery: k8s.DiscoveryV1Api;
const alive = new Set([...Object.keys(NODES), 'cloud-gw-2']);
let agents: NodeJS.Timeout | undefined;
const merge = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

function runAgents(): void {
  const tick = async (): Promise<void> => {
    await Promise.all([...alive].map((n) => cluster.beat(n).catch(() => undefined)));
    agents = setTimeout(() => void tick(), 300);
  };
  void tick();
}

const slice = async (): Promise<k8s.V1EndpointSlice | undefined> => {
  const list = await discovery.listNamespacedEndpointSlice({ namespace: NS });
  return list.items.find((s) => s.metadata?.name === SLICE);
};
const endpointsOf = (s: k8s.V1EndpointSlice | undefined): string[] => (s?.endpoints ?? []).map((e) => `${e.nodeName}=${e.addresses.join(',')}`);

test.before(async () => {
  cluster = await startCluster();
  discovery = cluster.kc.makeApiClient(k8s.DiscoveryV1Api);
  // The compiled Service, as Argo CD would apply it, and a second cloud gateway candidate.
  await cluster.objects.create(parse(readFileSync('dist/seed/runtime/service-x-raven-proxy-internal-svc.yaml', 'utf8')));
  const name = 'cloud-gw-2';
  const status = { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: '10.0.0.11' }] };
  await cluster.core.createNode({ body: { metadata: { name, labels: { 'kubernetes.io/hostname': name, 'apps.openyurt.io/nodepool': 'cloud' } }, spec: { podCIDR: '10.244.9.0/24', podCIDRs: ['10.244.9.0/24'] }, status } });
  await cluster.core.replaceNodeStatus({ name, body: { metadata: { name }, status } as k8s.V1Node });
  const gw = await cluster.gateway('gw-cloud');
  const endpoints = [...gw.spec!.endpoints!, { nodeName: name, type: 'proxy', port: 10262, publicIP: '203.0.113.11', underNAT: false }];
  await cluster.custom.patchClusterCustomObject({ group: 'raven.openyurt.io', version: 'v1beta1', plural: 'gateways', name: 'gw-cloud', body: { spec: { endpoints } } }, merge);
  runAgents();
  controller = await startController(cluster.kubeconfigFile);
});

test.after(async () => {
  clearTimeout(agents);
  await controller?.kill();
  await cluster?.close();
});

test('the Service gets an EndpointSlice at the cloud\'s active proxy endpoint, on the fronts\' ports', async () => {
  const s = await waitFor(async () => {
    const x = await slice();
    return endpointsOf(x).length ? x : undefined;
  }, 10_000, () => `the proxy EndpointSlice; controller said:\n${controller.logs()}`);
  assert.equal(activeOf(await cluster.gateway('gw-cloud')), ['proxy/cloud-gw-1', 'tunnel/cloud-gw-1']);
  assert.equal(endpointsOf(s), ['cloud-gw-1=10.0.0.10']);
  assert.is(s.addressType, 'IPv4');
  assert.equal(s.metadata?.labels, { 'kubernetes.io/service-name': 'x-raven-proxy-internal-svc', 'endpointslice.kubernetes.io/managed-by': 'raven-controller.raven-gitops.io' });
  assert.equal(s.ports?.map((p) => [p.name, p.protocol, p.port]), [
    ['http-10255', 'TCP', 10264],
    ['http-9445', 'TCP', 10264],
    ['https-10250', 'TCP', 10263],
    ['https-9100', 'TCP', 10263],
  ]);
  // Edge regions' proxy endpoints are clients, not entries.
  assert.equal((await discovery.listNamespacedEndpointSlice({ namespace: NS })).items.map((x) => x.metadata?.name), [SLICE]);
});

test('nothing is rewritten while nothing changes (heartbeats keep arriving)', async () => {
  const before = (await slice())?.metadata?.resourceVersion;
  await new Promise((r) => setTimeout(r, 1500));
  assert.is((await slice())?.metadata?.resourceVersion, before);
});

test('a failover of the cloud proxy endpoint moves the slice to the new node', async () => {
  alive.delete('cloud-gw-1');
  const s = await waitFor(async () => {
    const x = await slice();
    return endpointsOf(x).join() === 'cloud-gw-2=10.0.0.11' ? x : undefined;
  }, 10_000, () => `the slice to follow the failover; controller said:\n${controller.logs()}`);
  assert.ok(activeOf(await cluster.gateway('gw-cloud')).includes('proxy/cloud-gw-2'));
  assert.is(s.ports?.length, 4);
});

test('a slice deleted by someone else is put back', async () => {
  await discovery.deleteNamespacedEndpointSlice({ name: SLICE, namespace: NS });
  const s = await waitFor(async () => {
    const x = await slice();
    return endpointsOf(x).length ? x : undefined;
  }, 10_000, 'the slice to be recreated');
  assert.equal(endpointsOf(s), ['cloud-gw-2=10.0.0.11']);
});

test('turning enable-l7-proxy off in raven-cfg removes the slice', async () => {
  await cluster.core.patchNamespacedConfigMap({ name: 'raven-cfg', namespace: NS, body: { data: { 'enable-l7-proxy': 'false' } } }, merge);
  await waitFor(async () => (await slice()) === undefined, 10_000, () => `the slice to be removed; controller said:\n${controller.logs()}`);
  assert.match(controller.logs(), 'enable-l7-proxy is off in raven-cfg');
  // And back on: it returns.
  await cluster.core.patchNamespacedConfigMap({ name: 'raven-cfg', namespace: NS, body: { data: { 'enable-l7-proxy': 'true' } } }, merge);
  await waitFor(async () => endpointsOf(await slice()).join() === 'cloud-gw-2=10.0.0.11', 10_000, 'the slice to come back');
});

test.run();
