/**
 * The mesh model (src/topology/mesh.ts): reachability, hole punching, relays and paths, asked of
 * the compiler's typed topology and of Gateways read from the cluster, with the same answers.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Gateway, GatewayEndpoint } from '../../src/contract/gateway.ts';
import type { Endpoint, Exposure, Region } from '../../src/topology/model.ts';
import { loadTopology } from '../../src/topology/index.ts';
import {
  acceptsDials,
  buildMesh,
  canPunch,
  gatewayOf,
  isDialable,
  isReachable,
  LOAD_BALANCER_ADDRESS,
  type MeshGateway,
  regionEndpoint,
  regionGateway,
} from '../../src/topology/mesh.ts';

const endpoint = (node: string, extra: Partial<Endpoint> = {}): Endpoint => ({ path: [], node, type: 'tunnel', port: 4500, ...extra });
const region = (name: string, exposure: Exposure, underNAT: boolean, endpoints: Endpoint[], tunnels = 1): Region => ({
  path: ['spec', 'regions', 0],
  name,
  gatewayName: `gw-${name}`,
  type: exposure === 'none' ? 'edge' : 'cloud',
  nodes: endpoints.map((e) => e.node),
  podCIDRs: [],
  underNAT,
  exposure,
  endpoints,
  replicas: { tunnel: tunnels, proxy: 1 },
  proxyPorts: { http: [], https: [] },
});
const gateway = (name: string, exposeType: string, active?: Partial<GatewayEndpoint>): Gateway => ({
  metadata: { name },
  spec: { ...(exposeType && { exposeType }) },
  status: { activeEndpoints: active ? [{ nodeName: `${name}-1`, type: 'tunnel', port: 4500, ...active }] : [] },
});

test('reachable means exposed, not under NAT, with a public address: the same answer for a region and for its Gateway', () => {
  const cases: [string, Region, Gateway, boolean][] = [
    ['a public cloud', region('cloud', 'PublicIP', false, [endpoint('c1', { publicIP: '203.0.113.10' })]), gateway('gw-cloud', 'PublicIP', { publicIP: '203.0.113.10' }), true],
    ['a NATed edge', region('edge', 'none', true, [endpoint('e1')]), gateway('gw-edge', '', { underNAT: true }), false],
    ['an edge not exposed, not NATed', region('edge', 'none', false, [endpoint('e1')]), gateway('gw-edge', '', {}), false],
    ['exposed but behind NAT', region('odd', 'PublicIP', true, [endpoint('o1', { publicIP: '203.0.113.20' })]), gateway('gw-odd', 'PublicIP', { underNAT: true, publicIP: '203.0.113.20' }), false],
    ['exposed with no tunnel endpoint active', region('proxyonly', 'PublicIP', false, [endpoint('p1', { publicIP: '203.0.113.30' })], 0), gateway('gw-proxyonly', 'PublicIP'), false],
  ];
  for (const [what, r, g, want] of cases) {
    assert.is(isReachable(regionGateway(r)), want, `${what} (topology)`);
    assert.is(isReachable(gatewayOf(g)), want, `${what} (Gateway)`);
  }
});

test('where the old definitions disagreed: NAT always wins over exposure, and an address must be known to be dialled', () => {
  // Old: the proxy role called any exposed Gateway a server, underNAT or not; the plan did not.
  assert.is(acceptsDials('PublicIP', { underNAT: true, publicIP: '203.0.113.20' }), false, 'a NATed endpoint of an exposed gateway is dialled by nobody');
  assert.is(isDialable('PublicIP', { underNAT: true, publicIP: '203.0.113.20' }), false);
  // Old: the model's isReachable said yes for any exposed non-NATed region, the plan only once
  // the active endpoint has an address (a LoadBalancer's comes from its Service, later).
  assert.is(acceptsDials('LoadBalancer', { underNAT: false }), true, 'it listens: the address is on its way');
  assert.is(isDialable('LoadBalancer', { underNAT: false }), false, 'but nobody can dial it yet');
  assert.is(isDialable('LoadBalancer', { publicIP: '198.51.100.7' }), true);
  // The compiler predicts the runtime: a LoadBalancer region will have an address.
  const lb = region('lb', 'LoadBalancer', false, [endpoint('l1')]);
  assert.equal(regionGateway(lb), { name: 'gw-lb', exposeType: 'LoadBalancer', active: { underNAT: false, publicIP: LOAD_BALANCER_ADDRESS } });
  assert.is(isReachable(regionGateway(lb)), true);
  // Exposure names: the topology's 'none' and the Gateway's empty or unknown exposeType are not exposed.
  for (const t of ['none', '', undefined, 'NodePort']) assert.is(acceptsDials(t, {}), false, String(t));
  assert.equal(regionEndpoint(region('edge', 'none', true, [])), { underNAT: true });
});

test('hole punching: both sides know their NAT type and mapping, and the pair is not a hostile one (symmetric in its arguments)', () => {
  const nat = (natType: string | undefined, publicPort: number | undefined = 4500, publicIP = '198.51.100.1'): GatewayEndpoint => ({
    nodeName: 'n', type: 'tunnel', underNAT: true, publicIP, ...(natType && { natType }), ...(publicPort && { publicPort }),
  });
  const cases: [string, GatewayEndpoint, GatewayEndpoint, boolean][] = [
    ['two full cones', nat('Full Cone'), nat('Full Cone'), true],
    ['full cone and symmetric', nat('Full Cone'), nat('Symmetric NAT'), true],
    ['two symmetric NATs', nat('Symmetric NAT'), nat('Symmetric NAT'), false],
    ['symmetric and port restricted', nat('Symmetric NAT'), nat('Port Restricted cone NAT'), false],
    ['two port restricted cones', nat('Port Restricted cone NAT'), nat('Port Restricted cone NAT'), true],
    ['an unknown NAT type', nat('Full Cone'), nat(undefined), false],
    ['an Undefined NAT type', nat('Full Cone'), nat('Undefined'), false],
    ['no public port', nat('Full Cone'), nat('Full Cone', 0), false],
    ['no public address', nat('Full Cone'), nat('Full Cone', 4500, ''), false],
  ];
  for (const [what, a, b, want] of cases) {
    assert.is(canPunch(a, b), want, what);
    assert.is(canPunch(b, a), want, `${what} (reversed)`);
  }
});

test('paths: direct when either side is reachable, edge-to-edge when both punch, else relayed by the first reachable gateway by name', () => {
  const cloudB = gatewayOf(gateway('gw-b-cloud', 'PublicIP', { publicIP: '203.0.113.2' }));
  const cloudA = gatewayOf(gateway('gw-a-cloud', 'LoadBalancer', { publicIP: '203.0.113.1' }));
  const cone = { underNAT: true, natType: 'Full Cone', publicIP: '198.51.100.1', publicPort: 4500 };
  const hz = gatewayOf(gateway('gw-hz', '', cone));
  const qd = gatewayOf(gateway('gw-qd', '', { ...cone, publicIP: '198.51.100.2' }));
  const sym = gatewayOf(gateway('gw-sym', '', { ...cone, natType: 'Symmetric NAT', publicIP: '198.51.100.3' }));
  const idle = gatewayOf(gateway('gw-idle', 'PublicIP'));
  const all = [sym, qd, cloudB, idle, hz, cloudA];
  const kind = (m: ReturnType<typeof buildMesh<MeshGateway>>, a: MeshGateway, b: MeshGateway): string => {
    const p = m.pathBetween(a, b);
    return p.kind === 'relayed' ? `relayed via ${p.via.name}` : p.kind;
  };
  for (const order of [all, [...all].reverse()]) {
    const on = buildMesh(order, { natTraversal: true });
    assert.equal(on.relays.map((g) => g.name), ['gw-a-cloud', 'gw-b-cloud'], 'reachable gateways, by name; one without an active endpoint is none');
    assert.is(kind(on, hz, cloudB), 'direct');
    assert.is(kind(on, cloudA, cloudB), 'direct');
    assert.is(kind(on, hz, qd), 'edge-to-edge');
    assert.is(kind(on, sym, hz), 'edge-to-edge', 'symmetric with a full cone punches');
    assert.is(kind(on, hz, idle), 'none', 'a gateway with no active endpoint is reached by no path');
    const off = buildMesh(order, { natTraversal: false });
    assert.is(kind(off, hz, qd), 'relayed via gw-a-cloud', 'whatever the input order');
    assert.is(kind(off, qd, hz), 'relayed via gw-a-cloud', 'both sides pick the same relay');
    assert.is(off.relayBetween(hz, cloudA), undefined, 'no relay between a pair that talks directly');
    assert.equal(off.isolated(), []);
  }
  const noRelay = buildMesh([hz, qd, sym], { natTraversal: true });
  assert.is(kind(noRelay, hz, sym), 'edge-to-edge');
  assert.equal(noRelay.isolated(), [], 'every pair punches');
  const twoSymmetric = buildMesh([sym, gatewayOf(gateway('gw-sym2', '', { ...cone, natType: 'Symmetric NAT' })), hz], { natTraversal: true });
  assert.equal(twoSymmetric.isolated().map((g) => g.name), ['gw-sym', 'gw-sym2'], 'two symmetric NATs and no relay: cut off from each other');
});

const seedText = (edit: (s: string) => string = (s) => s): string =>
  edit(`apiVersion: raven-gitops.io/v1alpha1
kind: Topology
metadata: { name: mesh }
spec:
  gitops: { repoURL: https://git.example.com/x.git, argocd: {} }
  regions:
    - name: cloud
      type: cloud
      exposure: PublicIP
      endpoints: [{ node: cloud-gw-1, publicIP: 203.0.113.10 }]
    - name: hangzhou
      nodes: [hz-1]
      underNAT: true
      endpoints: [{ node: hz-1 }]
    - name: qingdao
      nodes: [qd-1]
      underNAT: true
      endpoints: [{ node: qd-1 }]
`);
const reachabilityErrors = (edit: (s: string) => string): string[] =>
  loadTopology('mesh.yaml', new TextEncoder().encode(seedText(edit)))
    .diagnostics.filter((d) => d.message.includes('no other region is reachable'))
    .map((d) => d.message.split(' ')[1]!);

test('the compiler checks with the same mesh: an unrelayed region is an error; a region with no tunnel needs no relay', () => {
  assert.equal(reachabilityErrors((s) => s), [], 'the seed: the cloud relays');
  assert.equal(reachabilityErrors((s) => s.replace('exposure: PublicIP', 'exposure: none').replace(', publicIP: 203.0.113.10', '')), ['"cloud"', '"hangzhou"', '"qingdao"']);
  // Old: an unexposed region was an error whenever no relay existed, even when no other region
  // had a tunnel to reach. The mesh asks only for paths between regions that have tunnels.
  const cloudWithoutTunnel = (s: string): string => s.replace('      endpoints: [{ node: cloud-gw-1, publicIP: 203.0.113.10 }]', '      endpoints: [{ node: cloud-gw-1, publicIP: 203.0.113.10 }]\n      replicas: { tunnel: 0 }');
  assert.equal(reachabilityErrors((s) => cloudWithoutTunnel(s)), ['"hangzhou"', '"qingdao"'], 'two edges, no relay');
  assert.equal(reachabilityErrors((s) => cloudWithoutTunnel(s).replace(/    - name: qingdao[\s\S]*$/, '')), [], 'one edge with a tunnel has nobody to reach');
});

test('a topology that validates is planned the way it was checked: the model mesh and the Gateways\' mesh give the same paths', () => {
  const t = loadTopology('mesh.yaml', new TextEncoder().encode(seedText())).topology!;
  assert.ok(t, 'the seed validates');
  const model = buildMesh(t.regions.map(regionGateway), { natTraversal: false });
  // The Gateways as the runtime will hold them: exposure from the spec, the first candidate active.
  const runtime = buildMesh(
    t.regions.map((r) => gatewayOf(gateway(r.gatewayName, r.exposure === 'none' ? '' : r.exposure, { underNAT: r.underNAT, ...(r.endpoints[0]!.publicIP && { publicIP: r.endpoints[0]!.publicIP }) }))),
    { natTraversal: false },
  );
  const paths = (m: ReturnType<typeof buildMesh<MeshGateway>>): string[] =>
    m.gateways.flatMap((a) => m.gateways.filter((b) => b !== a).map((b) => { const p = m.pathBetween(a, b); return `${a.name}->${b.name} ${p.kind === 'relayed' ? p.via.name : p.kind}`; }));
  assert.equal(paths(runtime), paths(model));
  assert.equal(paths(model), [
    'gw-cloud->gw-hangzhou direct', 'gw-cloud->gw-qingdao direct',
    'gw-hangzhou->gw-cloud direct', 'gw-hangzhou->gw-qingdao gw-cloud',
    'gw-qingdao->gw-cloud direct', 'gw-qingdao->gw-hangzhou gw-cloud',
  ]);
});

test.run();
