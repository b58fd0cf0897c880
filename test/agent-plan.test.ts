/** The agent's plan for each kind of node in the seed scenario (public cloud, two NATed edges). */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Gateway, GatewayEndpoint } from '../src/runtime/gateway.ts';
import { plan, type PlanOptions } from '../src/runtime/agent/plan.ts';

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
    gw('gw-cloud', 'PublicIP', { nodeName: 'cloud-gw-1', publicIP: '203.0.113.10', config: { publicKey: 'PK-cloud' } }, [['cloud-gw-1', '10.0.0.10', '10.244.0.0/24'], ['cloud-2', '10.0.0.11', '10.244.5.0/24']], ['cloud-gw-1']),
    gw('gw-hangzhou', '', { nodeName: 'hz-1', config: { publicKey: 'PK-hz' }, ...edge }, [['hz-1', '192.168.1.11', '10.244.1.0/24'], ['hz-2', '192.168.1.12', '10.244.2.0/24']], ['hz-1', 'hz-2']),
    gw('gw-qingdao', '', { nodeName: 'qd-1', config: { publicKey: 'PK-qd' }, ...qdEdge }, [['qd-1', '192.168.1.11', '10.244.3.0/24'], ['qd-2', '192.168.1.12', '10.244.4.0/24']], ['qd-1', 'qd-2']),
  ];
}

const REMOTE_OF_HZ = ['10.244.0.0/24', '10.244.3.0/24', '10.244.4.0/24', '10.244.5.0/24'];

test('a node in no Gateway is outside: no routes, no tunnels', () => {
  assert.equal(plan(seed(), opts('elsewhere')), { role: 'outside', routes: [], peers: [], mtu: 1420 });
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
    { gateway: 'gw-cloud', node: 'cloud-gw-1', publicKey: 'PK-cloud', endpoint: '203.0.113.10:4500', allowedIPs: REMOTE_OF_HZ, keepaliveSeconds: 5, path: 'direct', relaysFor: ['gw-qingdao'] },
  ]);
});

test('the public cloud gateway waits to be dialed (no endpoint, no keepalive) and relays nothing itself', () => {
  const p = plan(seed(), opts('cloud-gw-1'));
  assert.equal(p.peers.map((x) => [x.gateway, x.endpoint ?? null, x.keepaliveSeconds ?? null, x.allowedIPs]), [
    ['gw-hangzhou', null, null, ['10.244.1.0/24', '10.244.2.0/24']],
    ['gw-qingdao', null, null, ['10.244.3.0/24', '10.244.4.0/24']],
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
  assert.is(plan(seed(), opts('hz-2', { backend: 'ipsec' })).mtu, 1412);
});

test('the plan does not depend on the order Gateways are listed in', () => {
  const reference = JSON.stringify(plan(seed(), opts('hz-1')));
  const gws = seed();
  for (const order of [[2, 1, 0], [1, 0, 2], [0, 2, 1]]) assert.is(JSON.stringify(plan(order.map((i) => gws[i]!), opts('hz-1'))), reference);
});

test.run();
