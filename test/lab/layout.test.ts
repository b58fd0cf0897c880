/** The lab's layout and network script, pure: names, addresses, routes, NAT rules and refusals. */
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { labMesh, pathBetween } from '../../src/lab/check.ts';
import { natRuleset, networkScript } from '../../src/lab/network.ts';
import type { Gateway } from '../../src/contract/gateway.ts';
import { type LabOptions, planLab } from '../../src/lab/layout.ts';
import { loadTopology } from '../../src/topology/index.ts';
import type { Topology } from '../../src/topology/model.ts';

const load = (file: string, edit: (s: string) => string = (s) => s): Topology => {
  const r = loadTopology(file, new TextEncoder().encode(edit(readFileSync(file, 'utf8'))));
  if (!r.topology) throw new Error(JSON.stringify(r.diagnostics));
  return r.topology;
};
const options: LabOptions = { name: 'demo', nodesPerRegion: 2, symmetricNAT: false, wanLossPercent: 0, sameEdgeLAN: false };

test('every name carries the lab prefix; devices are short and unique; addresses follow the plan', () => {
  const p = planLab(load('topologies/seed.yaml'), options);
  assert.is(p.prefix, 'rl-demo');
  assert.equal(p.nodes.map((n) => [n.name, n.region, n.netns, n.lanIP, n.podCIDR, n.podIP, n.publicIP ?? null]), [
    ['cloud-gw-1', 'cloud', 'rl-demo-n0', '172.16.0.11', '10.240.0.0/24', '10.240.0.2', '203.0.113.10'],
    // The cloud selects its members by label: the lab adds one, so it has a plain member too.
    ['cloud-1', 'cloud', 'rl-demo-n1', '172.16.0.12', '10.240.1.0/24', '10.240.1.2', null],
    ['hz-1', 'hangzhou', 'rl-demo-n2', '172.16.1.11', '10.240.16.0/24', '10.240.16.2', null],
    ['hz-2', 'hangzhou', 'rl-demo-n3', '172.16.1.12', '10.240.17.0/24', '10.240.17.2', null],
    ['qd-1', 'qingdao', 'rl-demo-n4', '172.16.2.11', '10.240.32.0/24', '10.240.32.2', null],
    ['qd-2', 'qingdao', 'rl-demo-n5', '172.16.2.12', '10.240.33.0/24', '10.240.33.2', null],
  ]);
  assert.ok(p.nodes.every((n) => n.device.length <= 15 && n.device.startsWith('rw')));
  assert.is(new Set(p.nodes.map((n) => n.device)).size, p.nodes.length);
  assert.is.not(planLab(load('topologies/seed.yaml'), { ...options, name: 'other' }).nodes[0]!.device, p.nodes[0]!.device, 'two labs never share a device name');
  assert.equal(p.regions.map((r) => [r.name, r.nat?.publicIP ?? null, r.nat?.netns ?? null]), [
    ['cloud', null, null],
    ['hangzhou', '198.18.0.2', 'rl-demo-r1'],
    ['qingdao', '198.18.0.3', 'rl-demo-r2'],
  ]);
});

test('the network script: namespaces and veths from the root namespace, the CNI as host-gw routes, NAT by nftables', () => {
  const s = networkScript(planLab(load('topologies/seed.yaml'), options));
  assert.ok(s.root.every((l) => l.startsWith('netns add rl-demo-') || / netns rl-demo-\S+ type veth peer name \S+ netns rl-demo-/.test(l)), 'no link is ever made in the root namespace');
  const hz1 = s.perNamespace.get('rl-demo-n2')!;
  assert.ok(hz1.includes('route add 10.240.17.0/24 via 172.16.1.12'), 'same-region pods, host-gw style');
  assert.ok(hz1.includes('route add default via 172.16.1.1'), 'edges reach the world through their NAT');
  assert.ok(s.perNamespace.get('rl-demo-n0')!.includes('route add default via 169.254.0.1 dev wan0 onlink'), 'a public cloud node is on the internet');
  assert.ok(s.perNamespace.get('rl-demo-sw')!.includes('route add 203.0.113.10/32 dev wn0'), 'the internet routes the public address to its host');
  assert.match(s.nft.get('rl-demo-r1')!, 'oifname "wan0" masquerade\n');
  assert.ok(s.sysctls.get('rl-demo-n2')!.includes('net.ipv4.ip_forward=1'));
  assert.ok(!s.perNamespace.get('rl-demo-n1')!.some((l) => l.startsWith('route add default')), 'a cloud member without a public address has no way out but its gateway');
  assert.match(natRuleset(true, 0), 'masquerade fully-random', 'symmetric NAT');
  assert.match(natRuleset(false, 2), 'numgen random mod 100 < 2 drop', 'WAN loss');
});

test('WAN delay: every uplink is a delay line (10 ms one way unless set), per region; 0 keeps the veth; an unknown region is refused', () => {
  const seed = load('topologies/seed.yaml');
  const byDefault = networkScript(planLab(seed, options));
  assert.equal(byDefault.delayLines, [
    { port: 'wr1', hostNetns: 'rl-demo-r1', oneWayMs: 10 },
    { port: 'wr2', hostNetns: 'rl-demo-r2', oneWayMs: 10 },
    { port: 'wn0', hostNetns: 'rl-demo-n0', oneWayMs: 10 },
  ]);
  assert.ok(!byDefault.root.some((l) => l.startsWith('link add wan0')), 'no veth where a delay line stands');
  assert.ok(byDefault.perNamespace.get('rl-demo-r1')!.includes('link set wan0 up'), 'the host configures its wan0 as before');
  const mixed = networkScript(planLab(seed, { ...options, wanDelayMs: 0, regionWanDelayMs: { hangzhou: 25 } }));
  assert.equal(mixed.delayLines, [{ port: 'wr1', hostNetns: 'rl-demo-r1', oneWayMs: 25 }]);
  assert.ok(mixed.root.includes('link add wan0 netns rl-demo-n0 type veth peer name wn0 netns rl-demo-sw'));
  assert.throws(() => planLab(seed, { ...options, regionWanDelayMs: { shanghai: 5 } }), /--wan-delay shanghai=5: the topology has no region "shanghai" \(it has cloud, hangzhou, qingdao\)/);
  assert.throws(() => planLab(seed, { ...options, wanDelayMs: -1 }), /a WAN delay must be 0 to 5000 ms, not -1/);
});

test('same-edge-lan gives every edge region the same node addresses (conflicting IPs, as in the field)', () => {
  const p = planLab(load('topologies/seed.yaml'), { ...options, sameEdgeLAN: true });
  const ip = (n: string) => p.nodes.find((x) => x.name === n)!.lanIP;
  assert.equal([ip('hz-1'), ip('qd-1')], ['192.168.1.11', '192.168.1.11']);
  assert.is.not(ip('cloud-gw-1'), '192.168.1.11', 'the reachable cloud keeps its own range');
});

test('declared pod ranges are carved into a /24 per node; a lab that cannot be built is refused with the reason', () => {
  const withPods = load('topologies/seed.yaml', (s) => s.replace('      nodes: [hz-1, hz-2]', '      nodes: [hz-1, hz-2]\n      podCIDRs: [10.50.0.0/16]'));
  assert.equal(planLab(withPods, options).nodes.filter((n) => n.region === 'hangzhou').map((n) => n.podCIDR), ['10.50.0.0/24', '10.50.1.0/24']);
  const tiny = load('topologies/seed.yaml', (s) => s.replace('      nodes: [hz-1, hz-2]', '      nodes: [hz-1, hz-2]\n      podCIDRs: [10.50.0.0/25]'));
  assert.throws(() => planLab(tiny, options), /pod range 10\.50\.0\.0\/25 is smaller than the \/24/);
  assert.throws(() => planLab(load('topologies/retail-eu.yaml'), options), /does not emulate cloud load balancers; use exposure: PublicIP/);
  assert.throws(() => planLab(load('topologies/seed.yaml'), { ...options, name: 'Bad_Name' }), /lab name "Bad_Name" must be/);
  const selector = load('topologies/seed.yaml', (s) => s.replace('      nodes: [qd-1, qd-2]\n', '').replace('      endpoints: [{ node: qd-1 }, { node: qd-2 }]', '      endpoints: [{ node: qd-1 }]'));
  assert.equal(planLab(selector, { ...options, nodesPerRegion: 3 }).nodes.filter((n) => n.region === 'qingdao').map((n) => [n.name, n.labels['apps.openyurt.io/nodepool']]), [
    ['qd-1', 'qingdao'], ['qingdao-1', 'qingdao'], ['qingdao-2', 'qingdao'],
  ], 'a region that selects its members by label gets more nodes, carrying its labels');
});

test('the plan is the same for any ordering of regions and member lists', () => {
  const a = planLab(load('topologies/seed.yaml'), options);
  const reordered = (s: string): string => {
    // Move qingdao before hangzhou, and list hangzhou's nodes backwards.
    const hz = s.slice(s.indexOf('    - name: hangzhou'), s.indexOf('    - name: qingdao'));
    const qd = s.slice(s.indexOf('    - name: qingdao'));
    return s.slice(0, s.indexOf('    - name: hangzhou')) + qd.trimEnd() + '\n' + hz.replace('nodes: [hz-1, hz-2]', 'nodes: [hz-2, hz-1]');
  };
  const text = reordered(readFileSync('topologies/seed.yaml', 'utf8'));
  assert.ok(text.indexOf('name: qingdao') < text.indexOf('name: hangzhou') && text.includes('nodes: [hz-2, hz-1]'), 'the input really is reordered');
  assert.equal(JSON.stringify(planLab(load('topologies/seed.yaml', reordered), options)), JSON.stringify(a));
});

test('lab check names each pair\'s path by the mesh the agents plan with: local, direct, edge-to-edge, relayed', () => {
  const gw = (name: string, exposeType: string, active?: Record<string, unknown>): Gateway => ({
    metadata: { name },
    spec: { ...(exposeType && { exposeType }) },
    status: { activeEndpoints: active ? [{ nodeName: `${name}-1`, type: 'tunnel', port: 4500, ...active }] : [] },
  });
  const cone = { underNAT: true, natType: 'Full Cone', publicPort: 4500 };
  const gateways = [gw('gw-cloud', 'PublicIP', { publicIP: '203.0.113.10' }), gw('gw-hz', '', { ...cone, publicIP: '198.51.100.1' }), gw('gw-qd', '', { ...cone, publicIP: '198.51.100.2' }), gw('gw-idle', '')];
  const at = (region: string) => ({ region });
  const paths = (natTraversal: boolean, l3Tunnel = true): string[] => {
    const mesh = labMesh({ natTraversal }, gateways);
    return [['hz', 'hz'], ['hz', 'cloud'], ['hz', 'qd'], ['qd', 'idle']].map(([a, b]) => pathBetween({ l3Tunnel }, mesh, at(a!), at(b!)));
  };
  assert.equal(paths(false), ['local', 'direct', 'relayed via gw-cloud', 'no active gateway in idle']);
  assert.equal(paths(true), ['local', 'direct', 'edge-to-edge', 'no active gateway in idle']);
  assert.equal(paths(false, false), ['local', 'no l3 tunnel', 'no l3 tunnel', 'no l3 tunnel']);
});

test.run();
