/** The L7 proxy's in-cluster entry: where `x-raven-proxy-internal-svc` leads, computed without a cluster. */
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import type { ServiceLike } from '../../src/controller/exposure.ts';
import { PROXY_SERVICE_NAME } from '../../src/contract/names.ts';
import { desiredProxyEntry, ownedSliceFields, type ProxyEntryInput, slicePorts } from '../../src/controller/proxy-entry.ts';
import type { Gateway } from '../../src/contract/gateway.ts';

/** The Service exactly as the compiler emits it for the seed. */
const compiled = parse(readFileSync('dist/seed/runtime/service-x-raven-proxy-internal-svc.yaml', 'utf8')) as ServiceLike;
const SEED_PORTS = [
  { name: 'http-10255', protocol: 'TCP', port: 10264 },
  { name: 'http-9445', protocol: 'TCP', port: 10264 },
  { name: 'https-10250', protocol: 'TCP', port: 10263 },
  { name: 'https-9100', protocol: 'TCP', port: 10263 },
];
const LABELS = { 'kubernetes.io/service-name': PROXY_SERVICE_NAME, 'endpointslice.kubernetes.io/managed-by': 'raven-controller.raven-gitops.io' };

function gw(name: string, exposeType: string | undefined, active: [node: string, type: 'proxy' | 'tunnel'][], nodes: [node: string, ip: string][]): Gateway {
  return {
    metadata: { name },
    spec: { ...(exposeType && { exposeType }) },
    status: {
      activeEndpoints: active.map(([nodeName, type]) => ({ nodeName, type, port: type === 'proxy' ? 10262 : 4500 })),
      nodes: nodes.map(([nodeName, privateIP]) => ({ nodeName, privateIP, subnets: [] })),
    },
  };
}

const cloud = gw('gw-cloud', 'PublicIP', [['cloud-gw-1', 'proxy'], ['cloud-gw-1', 'tunnel']], [['cloud-gw-1', '10.0.0.10'], ['cloud-gw-2', '10.0.0.11']]);
const edge = gw('gw-hangzhou', undefined, [['hz-1', 'proxy'], ['hz-1', 'tunnel']], [['hz-1', '192.168.1.11']]);
const input = (over: Partial<ProxyEntryInput> = {}): ProxyEntryInput => ({ gateways: [cloud, edge], l7Proxy: true, service: compiled, namespace: 'raven-system', ...over });

test('the seed: one IPv4 slice at the cloud proxy endpoint, on the fronts\' ports under the Service\'s port names', () => {
  const { slices, none, dropped } = desiredProxyEntry(input());
  assert.is(none, undefined);
  assert.equal(dropped, []);
  assert.equal(slices, [
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'x-raven-proxy-internal-svc-ipv4', namespace: 'raven-system', labels: LABELS },
      addressType: 'IPv4',
      endpoints: [{ addresses: ['10.0.0.10'], nodeName: 'cloud-gw-1', conditions: { ready: true } }],
      ports: SEED_PORTS,
    },
  ]);
});

test('edge regions (not exposed) and tunnel endpoints never become endpoints of the entry', () => {
  const tunnelOnly = gw('gw-cloud', 'PublicIP', [['cloud-gw-1', 'tunnel']], [['cloud-gw-1', '10.0.0.10']]);
  const r = desiredProxyEntry(input({ gateways: [tunnelOnly, edge] }));
  assert.equal(r.slices, []);
  assert.is(r.none, 'no exposed region has an active proxy endpoint');
});

test('a proxy endpoint behind NAT is no server (the agent makes it a client), so the entry does not lead to it', () => {
  const natted = gw('gw-cloud', 'PublicIP', [['cloud-gw-1', 'proxy']], [['cloud-gw-1', '10.0.0.10']]);
  natted.status!.activeEndpoints![0]!.underNAT = true;
  const r = desiredProxyEntry(input({ gateways: [natted, edge] }));
  assert.equal(r.slices, []);
  assert.is(r.none, 'no exposed region has an active proxy endpoint');
});

test('every exposed region counts, LoadBalancer too; dual-stack gives one slice per family', () => {
  const lb = gw('gw-frankfurt', 'LoadBalancer', [['fra-1', 'proxy']], [['fra-1', 'fd00::12']]);
  const other = gw('gw-aws', 'PublicIP', [['aws-1', 'proxy']], [['aws-1', '10.1.0.5']]);
  const { slices } = desiredProxyEntry(input({ gateways: [lb, cloud, other, edge] }));
  assert.equal(slices.map((s) => [s.metadata.name, s.addressType, s.endpoints.map((e) => `${e.nodeName}=${e.addresses[0]}`)]), [
    ['x-raven-proxy-internal-svc-ipv4', 'IPv4', ['aws-1=10.1.0.5', 'cloud-gw-1=10.0.0.10']],
    ['x-raven-proxy-internal-svc-ipv6', 'IPv6', ['fra-1=fd00::12']],
  ]);
  assert.equal(slices[1]!.ports, SEED_PORTS);
});

test('the same for every order of Gateways and of their entries', () => {
  const lb = gw('gw-frankfurt', 'LoadBalancer', [['fra-2', 'proxy'], ['fra-1', 'proxy']], [['fra-2', '10.2.0.2'], ['fra-1', '10.2.0.1']]);
  const expected = JSON.stringify(desiredProxyEntry(input({ gateways: [cloud, lb, edge] })));
  for (const order of [[lb, edge, cloud], [edge, cloud, lb], [lb, cloud, edge]]) {
    assert.is(JSON.stringify(desiredProxyEntry(input({ gateways: order }))), expected);
  }
  const reversed = { ...compiled, spec: { ...compiled.spec, ports: [...(compiled.spec!.ports as unknown[])].reverse() } };
  assert.is(JSON.stringify(desiredProxyEntry(input({ gateways: [cloud, lb, edge], service: reversed }))), expected);
});

test('failover: the entry follows the active proxy endpoint', () => {
  const after = gw('gw-cloud', 'PublicIP', [['cloud-gw-2', 'proxy']], [['cloud-gw-1', '10.0.0.10'], ['cloud-gw-2', '10.0.0.11']]);
  assert.equal(desiredProxyEntry(input({ gateways: [after] })).slices[0]!.endpoints, [{ addresses: ['10.0.0.11'], nodeName: 'cloud-gw-2', conditions: { ready: true } }]);
});

test('no slice when L7 proxy is off, the Service is missing or has no usable port; each says why', () => {
  const cases: [string, Partial<ProxyEntryInput>, string][] = [
    ['proxy off', { l7Proxy: false }, 'enable-l7-proxy is off in raven-cfg'],
    ['no Service', { service: undefined }, 'Service x-raven-proxy-internal-svc does not exist in raven-system'],
    ['no ports', { service: { metadata: { name: PROXY_SERVICE_NAME }, spec: { ports: [] } } }, 'Service x-raven-proxy-internal-svc has no usable ports'],
  ];
  for (const [name, over, why] of cases) {
    const r = desiredProxyEntry(input(over));
    assert.equal(r.slices, [], name);
    assert.is(r.none, why, name);
  }
});

test('an active endpoint without an address is left out and reported; two nodes on one address give one endpoint', () => {
  const broken = gw('gw-cloud', 'PublicIP', [['cloud-gw-1', 'proxy'], ['cloud-gw-3', 'proxy']], [['cloud-gw-1', '10.0.0.10']]);
  const twin = gw('gw-aws', 'PublicIP', [['aws-1', 'proxy']], [['aws-1', '10.0.0.10']]);
  const r = desiredProxyEntry(input({ gateways: [twin, broken] }));
  assert.equal(r.slices[0]!.endpoints, [{ addresses: ['10.0.0.10'], nodeName: 'aws-1', conditions: { ready: true } }]);
  assert.equal(r.dropped, [{ source: 'gw-cloud', kind: 'node-ip', reason: 'active proxy endpoint cloud-gw-3 has no privateIP in status.nodes; left out of x-raven-proxy-internal-svc' }]);
});

test('Service ports: target port numbers (or the port), named target ports and duplicates refused', () => {
  const dropped: { kind: string; reason: string }[] = [];
  const svc: ServiceLike = {
    metadata: { name: PROXY_SERVICE_NAME },
    spec: { ports: [{ name: 'b', port: 80 }, { name: 'a', port: 81, targetPort: '10264', protocol: 'TCP' }, { name: 'c', port: 82, targetPort: 'http' }, { name: 'a', port: 83, targetPort: 1 }, { name: 'd', port: 84, targetPort: 70000 }] },
  };
  assert.equal(slicePorts(svc, dropped as never), [{ name: 'a', protocol: 'TCP', port: 10264 }, { name: 'b', protocol: 'TCP', port: 80 }]);
  assert.equal(dropped.map((d) => d.kind), ['port', 'port', 'port']);
  assert.match(dropped[0]!.reason, 'spec.ports[2]: targetPort "http" is not a port number');
});

test('what the API returns compares equal to what was desired, and a changed endpoint does not', () => {
  const [want] = desiredProxyEntry(input()).slices;
  const fromApi = { ...want, metadata: { ...want!.metadata, resourceVersion: '7', uid: 'u', labels: { ...want!.metadata.labels, extra: 'x' } }, endpoints: want!.endpoints.map((e) => ({ ...e, conditions: { ...e.conditions, serving: true } })) };
  assert.equal(ownedSliceFields(fromApi), ownedSliceFields(want));
  const moved = { ...fromApi, endpoints: [{ addresses: ['10.0.0.11'], nodeName: 'cloud-gw-2', conditions: { ready: true } }] };
  assert.not.equal(ownedSliceFields(moved), ownedSliceFields(want));
});

test.run();
