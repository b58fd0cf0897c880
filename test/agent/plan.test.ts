/** The agent's plan for each kind of node in the seed scenario (public cloud, two NATed edges). */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type Gateway, type GatewayEndpoint, STANDBY_KEYS_CONFIG } from '../../src/contract/gateway.ts';
import { plan, type PlanOptions } from '../../src/agent/plan.ts';

const opts = (node: string, extra: Partial<PlanOptions> = {}): PlanOptions => ({ node, backend: 'wireguard', device: 'raven-wg0', natTraversal: false, forwardNodeIP: false, mtu: 0, underlayMTU: 1500, ...extra });

function gw(name: string, exposeType: string, active: Partial<GatewayEndpoint> & { nodeName: string }, nodes: [string, string, string][], candidates: string[]): Gateway {
  return {
    metadata: { name },
    spec: { ...(exposeType && { exposeType }), endpoints: candidates.map((nodeName) => ({ nodeName, type: 'tunnel' as const, port: 4500 })) },
    status: {
      activeEndpoints: [{ type: 'tunnel', port: 4500, underNAT: exposeType === '', ...active }],
      nodes: nodes.map(([nodeName, privateIP, subnet]) => ({ nodeName, privateIP, subnets: [subnet] })),
    },
  };
}

function seed(edge: Partial<GatewayEndpoint> = {}, qdEdge: Partial<GatewayEndpoint> = {}): Gateway[] {
  return [
    gw('gw-cloud', 'PublicIP', { nodeName: 'cloud-gw-1', publicIP: '203.0.113.10', config: { publicKey: PK.cloud } }, [['cloud-gw-1', '10.0.0.10', '10.244.0.0/24'], ['cloud-2', '10.0.0.11', '10.244.5.0/24']], ['cloud-gw-1']),
    gw('gw-hangzhou', '', { nodeName: 'hz-1', config: { publicKey: PK.hz }, ...edge }, [['hz-1', '192.168.1.11', '10.244.1.0/24'], ['hz-2', '192.168.1.12', '10.244.2.0/24']], ['hz-1', 'hz-2']),
    gw('gw-qingdao', '', { nodeName: 'qd-1', config: { publicKey: PK.qd }, ...qdEdge }, [['qd-1', '192.168.1.11', '10.244.3.0/24'], ['qd-2', '192.168.1.12', '10.244.4.0/24']], ['qd-1', 'qd-2']),
  ];
}

/** WireGuard-format keys (32 bytes, base64): the plan drops anything else. */
const PK = { cloud: Buffer.alloc(32, 'cloud').toString('base64'), hz: Buffer.alloc(32, 'hz').toString('base64'), qd: Buffer.alloc(32, 'qd').toString('base64') };

const REMOTE_OF_HZ = ['10.244.0.0/24', '10.244.3.0/24', '10.244.4.0/24', '10.244.5.0/24'];

test('a node in no Gateway is outside: no routes, no tunnels', () => {
  assert.equal(plan(seed(), opts('elsewhere')), { role: 'outside', routes: [], peers: [], staged: [], mtu: 1420, dropped: [] });
});

test('a standby sends only remote-region destinations to its active gateway, with the tunnel MTU', () => {
  const p = plan(seed(), opts('hz-2'));
  assert.is(p.role, 'standby');
  assert.equal(p.routes, REMOTE_OF_HZ.map((dst) => ({ dst, via: '192.168.1.11', mtu: 1420 })));
  assert.equal(p.peers, []);
});

test('a member that is no candidate is a plain member, routed through its gateway', () => {
  const p = plan(seed(), opts('cloud-2'));
  assert.is(p.role, 'member');
  assert.ok(p.routes.every((r) => r.via === '10.0.0.10'));
  assert.equal(p.routes.map((r) => r.dst), ['10.244.1.0/24', '10.244.2.0/24', '10.244.3.0/24', '10.244.4.0/24']);
});

test('a NATed edge gateway dials the cloud with keepalive, and reaches the other edge relayed through it', () => {
  const p = plan(seed(), opts('hz-1'));
  assert.is(p.role, 'gateway');
  assert.equal(p.routes, REMOTE_OF_HZ.map((dst) => ({ dst, dev: 'raven-wg0', mtu: 1420 })));
  assert.equal(p.peers, [
    {
      gateway: 'gw-cloud', node: 'cloud-gw-1', publicKey: PK.cloud, endpoint: '203.0.113.10:4500', allowedIPs: REMOTE_OF_HZ,
      localSubnets: ['10.244.1.0/24', '10.244.2.0/24'], keepaliveSeconds: 5, path: 'direct', relaysFor: ['gw-qingdao'], probeIP: '10.244.0.0',
    },
  ]);
  assert.is(p.probeSource, '10.244.1.0', 'the network address of its own pod subnet');
});

test('the public cloud gateway waits to be dialed (no endpoint, no keepalive); as the relay it sends each edge the other edge too', () => {
  const p = plan(seed(), opts('cloud-gw-1'));
  assert.equal(p.peers.map((x) => [x.gateway, x.endpoint ?? null, x.keepaliveSeconds ?? null, x.allowedIPs, x.localSubnets]), [
    ['gw-hangzhou', null, null, ['10.244.1.0/24', '10.244.2.0/24'], ['10.244.0.0/24', '10.244.3.0/24', '10.244.4.0/24', '10.244.5.0/24']],
    ['gw-qingdao', null, null, ['10.244.3.0/24', '10.244.4.0/24'], ['10.244.0.0/24', '10.244.1.0/24', '10.244.2.0/24', '10.244.5.0/24']],
  ]);
});

test('with NAT traversal and compatible NATs, edges connect directly, and only one side initiates at once', () => {
  const hz = { natType: 'Full Cone', publicIP: '198.51.100.21', publicPort: 4500 };
  const qd = { natType: 'Port Restricted cone NAT', publicIP: '198.51.100.31', publicPort: 4501 };
  const fromHz = plan(seed(hz, qd), opts('hz-1', { natTraversal: true })).peers.find((x) => x.gateway === 'gw-qingdao')!;
  const fromQd = plan(seed(hz, qd), opts('qd-1', { natTraversal: true })).peers.find((x) => x.gateway === 'gw-hangzhou')!;
  assert.equal([fromHz.path, fromHz.endpoint, fromHz.initiateDelayMs], ['edge-to-edge', '198.51.100.31:4501', 0]);
  assert.equal([fromQd.path, fromQd.endpoint, fromQd.initiateDelayMs], ['edge-to-edge', '198.51.100.21:4500', 200]);
  const cloud = plan(seed(hz, qd), opts('hz-1', { natTraversal: true })).peers.find((x) => x.gateway === 'gw-cloud')!;
  assert.equal(cloud.relaysFor, [], 'the cloud no longer relays a region reached directly');
});

test('symmetric NAT on both edges falls back to the relay, even with NAT traversal on', () => {
  const sym = { natType: 'Symmetric NAT', publicIP: '198.51.100.21', publicPort: 4500 };
  const p = plan(seed(sym, { ...sym, publicIP: '198.51.100.31' }), opts('hz-1', { natTraversal: true }));
  assert.equal(p.peers.map((x) => [x.gateway, x.relaysFor]), [['gw-cloud', ['gw-qingdao']]]);
});

test('no active gateway in my region: no routes (nothing can leave); regions without one are not routed to', () => {
  const gws = seed();
  gws[1]!.status!.activeEndpoints = [];
  assert.equal(plan(gws, opts('hz-2')).routes, []);
  assert.ok(plan(gws, opts('cloud-2')).routes.every((r) => !r.dst.startsWith('10.244.1.') && !r.dst.startsWith('10.244.2.')));
});

test('forwardNodeIP also routes remote node addresses; an MTU override wins over the default', () => {
  const p = plan(seed(), opts('hz-2', { forwardNodeIP: true, mtu: 1380 }));
  assert.ok(p.routes.some((r) => r.dst === '10.0.0.10/32'));
  assert.ok(p.routes.every((r) => r.mtu === 1380));
  // IPsec: 1500 - 88 = 1412, capped at the 1400 strongSwan's userspace ESP can carry, on every node.
  assert.is(plan(seed(), opts('hz-2', { backend: 'ipsec' })).mtu, 1400);
  assert.is(plan(seed(), opts('hz-2', { backend: 'ipsec', underlayMTU: 1400 })).mtu, 1312);
});

test("forwardNodeIP never routes a peer's own dialed address into its tunnel", () => {
  const gws = seed();
  gws[0]!.status!.nodes![0]!.privateIP = '203.0.113.10';
  const p = plan(gws, opts('hz-1', { forwardNodeIP: true }));
  assert.not.ok(p.routes.some((r) => r.dst === '203.0.113.10/32'), 'route');
  assert.not.ok(p.peers[0]!.allowedIPs.includes('203.0.113.10/32'), 'allowed IPs');
  assert.ok(p.routes.some((r) => r.dst === '10.0.0.11/32'), 'other remote nodes are routed');
  assert.ok(plan(gws, opts('hz-2', { forwardNodeIP: true })).routes.some((r) => r.dst === '203.0.113.10/32'), 'members still send it to their gateway');
});

test('an IPsec gateway leaves routing to charon; members still route remote regions to it', () => {
  const p = plan(seed(), opts('hz-1', { backend: 'ipsec' }));
  assert.equal([p.role, p.routes], ['gateway', []]);
  assert.equal(p.peers[0]!.localSubnets, ['10.244.1.0/24', '10.244.2.0/24']);
  assert.equal(plan(seed(), opts('hz-2', { backend: 'ipsec' })).routes.map((r) => r.via), REMOTE_OF_HZ.map(() => '192.168.1.11'));
});

test("remote standbys' published keys are staged on gateways that hold a tunnel with their region", () => {
  const keys = (o: Record<string, string>) => ({ [STANDBY_KEYS_CONFIG]: JSON.stringify(o) });
  const K = (c: string) => `${c.repeat(42)}A=`;
  const gws = seed({ config: { publicKey: K('h'), ...keys({ 'hz-2': K('2'), 'hz-1': K('h') }) } }, { config: { publicKey: K('q'), ...keys({ 'qd-2': 'not a key', 'qd-3': K('3') }) } });
  assert.equal(plan(gws, opts('cloud-gw-1')).staged, [
    { gateway: 'gw-hangzhou', node: 'hz-2', publicKey: K('2'), probeIP: '10.244.2.0' },
    { gateway: 'gw-qingdao', node: 'qd-3', publicKey: K('3') },
  ], 'not the active one, nothing malformed; a standby with a pod subnet has its probe address');
  assert.equal(plan(gws, opts('hz-1')).staged, [], 'qingdao is relayed: its standbys are the relay\'s business');
  assert.equal(plan(gws, opts('hz-2')).staged, [], 'only gateways stage');
  gws[1]!.status!.activeEndpoints![0]!.config![STANDBY_KEYS_CONFIG] = '{"broken';
  assert.equal(plan(gws, opts('cloud-gw-1')).staged.map((s) => s.node), ['qd-3']);
});

test('a warm standby (WireGuard) holds the peers it would have as the gateway, but routes through the active one; it probes through its warm tunnel', () => {
  const p = plan(seed(), opts('hz-2', { warmStandby: true }));
  assert.is(p.role, 'standby');
  const [probes, traffic] = [p.routes.filter((r) => r.dev), p.routes.filter((r) => !r.dev)];
  assert.ok(traffic.length > 0 && traffic.every((r) => r.via === '192.168.1.11'), 'traffic still goes to the active gateway');
  assert.equal(probes, [{ dst: '10.244.0.0/32', dev: 'raven-wg0', mtu: 1420 }], 'only the cloud gateway\'s probe address goes into the warm tunnel');
  assert.equal(p.peers.map((x) => [x.gateway, x.endpoint, x.keepaliveSeconds]), [['gw-cloud', '203.0.113.10:4500', 5]], 'dials the cloud now: a session exists before it is needed');
  assert.is(p.probeSource, '10.244.2.0', 'probes from its own probe address, which the cloud stages for it');
  assert.equal(plan(seed(), opts('hz-2', { warmStandby: true, backend: 'ipsec' })).peers, [], 'IPsec standbys stay cold');
  assert.equal(plan(seed(), opts('cloud-2', { warmStandby: true })).peers, [], 'members never hold a tunnel');
});

test('a remote standby with a public address is dialled from behind NAT, so its session exists before it takes over', () => {
  const K = (c: string) => `${c.repeat(42)}A=`;
  const gws = seed();
  const cloud = gws[0]!;
  cloud.spec!.endpoints!.push({ nodeName: 'cloud-gw-2', type: 'tunnel', port: 4500, publicIP: '203.0.113.11' });
  cloud.status!.nodes!.push({ nodeName: 'cloud-gw-2', privateIP: '10.0.0.12', subnets: ['10.244.6.0/24'] });
  cloud.status!.activeEndpoints![0]!.config = { publicKey: K('c'), [STANDBY_KEYS_CONFIG]: JSON.stringify({ 'cloud-gw-2': K('d') }) };
  assert.equal(plan(gws, opts('hz-1')).staged, [{ gateway: 'gw-cloud', node: 'cloud-gw-2', publicKey: K('d'), endpoint: '203.0.113.11:4500', keepaliveSeconds: 5, probeIP: '10.244.6.0' }]);
  // A standby is dialled when it is dialable itself (src/topology/mesh.ts): one behind NAT is not,
  // though the active endpoint of its region is (before, only the active endpoint was asked).
  cloud.spec!.endpoints![1]!.underNAT = true;
  assert.equal(plan(gws, opts('hz-1')).staged, [{ gateway: 'gw-cloud', node: 'cloud-gw-2', publicKey: K('d'), probeIP: '10.244.6.0' }]);
  cloud.spec!.endpoints![1]!.underNAT = false;
  // The cloud standby, warm, can dial no NATed edge: it holds their keys and waits.
  const warm = plan(gws, opts('cloud-gw-2', { warmStandby: true }));
  assert.equal(warm.peers.map((x) => [x.gateway, x.endpoint ?? null]), [['gw-hangzhou', null], ['gw-qingdao', null]]);
});

test('NAT traversal needs both public endpoints: otherwise both edges agree on the relay', () => {
  const hz = { natType: 'Full Cone', publicIP: '198.51.100.21', publicPort: 4500 };
  const qd = { natType: 'Full Cone', publicIP: '198.51.100.31' };
  const fromHz = plan(seed(hz, qd), opts('hz-1', { natTraversal: true }));
  const fromQd = plan(seed(hz, qd), opts('qd-1', { natTraversal: true }));
  assert.equal(fromHz.peers.map((x) => [x.gateway, x.relaysFor]), [['gw-cloud', ['gw-qingdao']]]);
  assert.equal(fromQd.peers.map((x) => [x.gateway, x.relaysFor]), [['gw-cloud', ['gw-hangzhou']]]);
});

test('every node, every NAT case, both backends: the plan does not depend on the order of Gateways, nodes or subnets', () => {
  const cone = (ip: string) => ({ natType: 'Full Cone', publicIP: ip, publicPort: 4500 });
  const cases: [string, Gateway[], Partial<PlanOptions>][] = [
    ['relay', seed(), {}],
    ['edge-to-edge', seed(cone('198.51.100.21'), cone('198.51.100.31')), { natTraversal: true }],
    ['ipsec, node IPs', seed(), { backend: 'ipsec', forwardNodeIP: true }],
  ];
  let rng = 7;
  const random = () => ((rng = (rng * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const shuffle = <T,>(xs: readonly T[]): T[] => xs.map((x) => [random(), x] as const).sort((a, b) => a[0] - b[0]).map(([, x]) => x);
  for (const [what, gws, extra] of cases) {
    for (const node of ['cloud-gw-1', 'cloud-2', 'hz-1', 'hz-2', 'qd-1', 'qd-2', 'elsewhere']) {
      const reference = JSON.stringify(plan(gws, opts(node, extra)));
      for (let i = 0; i < 8; i++) {
        const shuffled = shuffle(gws).map((g) => ({ ...g, status: { ...g.status!, nodes: shuffle(g.status!.nodes!) } }));
        assert.is(JSON.stringify(plan(shuffled, opts(node, extra))), reference, `${what}: ${node}`);
      }
    }
  }
});


/** Hostile values as they can reach Gateway status: a node writes its own InternalIP; pod ranges come from Nodes, Calico and annotations. */
const HOSTILE_IPS = ['192.168.1.13\nnetns exec x sh -c "id > /tmp/pwned"', '0.0.0.0/1', '10.0.0.010', 'evil.example.com', '-f', '127.0.0.1', 'fe80::1%eth0', '::ffff:10.0.0.1', '0.0.0.0', ' 10.0.0.12'];
const HOSTILE_SUBNETS = ['0.0.0.0/0', '0.0.0.0/1', '128.0.0.0/1', '::/0', '10.99.0.0/24 table main', '10.99.1.0/24\nroute add default via 1.2.3.4', '169.254.0.0/16', '127.0.0.0/8', '224.0.0.0/4', 'fe80::/64', '10.99.2.5/24', '10.99.3.0/33', '10.244.1.0/24', '10.244.0.0/16'];

test('hostile addresses and ranges in a remote region are refused one by one; its good nodes, and every other region, still route', () => {
  const gws = seed();
  const qd = gws[2]!;
  HOSTILE_IPS.forEach((ip, i) => qd.status!.nodes!.push({ nodeName: `qd-evil-${i}`, privateIP: ip, subnets: [`10.98.${i}.0/24`] }));
  qd.status!.nodes!.push({ nodeName: 'qd-ranges', privateIP: '192.168.1.40', subnets: [...HOSTILE_SUBNETS, '10.97.0.0/24'] });
  for (const node of ['hz-1', 'hz-2']) {
    const p = plan(gws, opts(node, { forwardNodeIP: true }));
    const dsts = p.routes.map((r) => r.dst);
    const expected = ['10.0.0.10/32', '10.0.0.11/32', '10.244.0.0/24', '10.244.3.0/24', '10.244.4.0/24', '10.244.5.0/24', '10.97.0.0/24', ...HOSTILE_IPS.map((_, i) => `10.98.${i}.0/24`), '192.168.1.40/32'].sort();
    assert.equal(dsts, expected, `${node}: exactly the well-formed remote ranges, and node addresses that do not collide with ours`);
    for (const r of p.routes) assert.ok(!/[\s;]/.test(r.dst + (r.via ?? '') + (r.dev ?? '')), `nothing but canonical text in ${JSON.stringify(r)}`);
    assert.ok((p.dropped ?? []).length >= HOSTILE_IPS.length + HOSTILE_SUBNETS.length - 2, `refusals are reported (${(p.dropped ?? []).length})`);
  }
  const relay = plan(gws, opts('hz-1')).peers.find((x) => x.gateway === 'gw-cloud')!;
  assert.ok(relay.allowedIPs.includes('10.97.0.0/24') && !relay.allowedIPs.some((a) => a.startsWith('0.') || a.startsWith('128.') || a.includes(' ')), 'the relay carries the good range and none of the bad');
});

test('a range holding another region\'s is refused, the narrower one keeps working; the same range claimed twice is refused on both sides', () => {
  const gws = seed();
  gws[2]!.status!.nodes![0]!.subnets = ['10.244.0.0/22'];
  let p = plan(gws, opts('cloud-2'));
  assert.ok(p.routes.some((r) => r.dst === '10.244.1.0/24'), 'hangzhou keeps its range');
  assert.not.ok(p.routes.some((r) => r.dst === '10.244.0.0/22'), 'the wider claim from qingdao is refused');
  gws[2]!.status!.nodes![0]!.subnets = ['10.244.1.0/24'];
  p = plan(gws, opts('cloud-2'));
  assert.not.ok(p.routes.some((r) => r.dst === '10.244.1.0/24'), 'a duplicated range goes nowhere rather than possibly to the hijacker');
  assert.ok(p.dropped!.some((d) => d.kind === 'subnet-conflict' && d.source === 'gw-hangzhou') && p.dropped!.some((d) => d.kind === 'subnet-conflict' && d.source === 'gw-qingdao'));
  assert.ok(p.routes.some((r) => r.dst === '10.244.2.0/24'), 'hangzhou\'s other node still routes');
});

test('a bad key, port, endpoint address or NAT type drops that value only; the peer set of every other region is unchanged', () => {
  const good = plan(seed(), opts('cloud-gw-1')).peers;
  const gws = seed();
  gws[1]!.status!.activeEndpoints![0]!.config = { publicKey: 'not-a-key; rm -rf /' };
  gws[2]!.status!.activeEndpoints![0]!.port = 99999;
  const p = plan(gws, opts('cloud-gw-1'));
  assert.equal(p.peers.find((x) => x.gateway === 'gw-hangzhou')!.publicKey, undefined, 'no key: the peer is not configured until a good one is published');
  assert.equal(p.peers.filter((x) => x.gateway !== 'gw-hangzhou' && x.gateway !== 'gw-qingdao'), good.filter((x) => x.gateway !== 'gw-hangzhou' && x.gateway !== 'gw-qingdao'));
  assert.ok(p.dropped!.some((d) => d.kind === 'public-key') && p.dropped!.some((d) => d.kind === 'port'));
  const cloudWithBadIP = seed();
  cloudWithBadIP[0]!.status!.activeEndpoints![0]!.publicIP = '203.0.113.010';
  const hz = plan(cloudWithBadIP, opts('hz-1'));
  assert.equal(hz.peers.map((x) => x.endpoint), [], 'an unparsable public address is never dialled');
  assert.ok(hz.dropped!.some((d) => d.kind === 'public-ip'));
});

test.run();
