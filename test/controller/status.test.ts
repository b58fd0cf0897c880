/** Gateway status and membership: what `kubectl get gw -o yaml` shows an operator. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Gateway, NodeLike } from '../../src/contract/gateway.ts';
import { assignNodes, isMember, matchesSelector } from '../../src/controller/membership.ts';
import { gatewayStatus, nodeInfo } from '../../src/controller/status.ts';

const node = (name: string, extra: Partial<NodeLike> = {}): NodeLike => ({ ...extra, metadata: { ...(extra.metadata ?? {}), name } });

test('privateIP is the first InternalIP and subnets are every podCIDRs entry (dual-stack)', () => {
  const n = node('hz-1', { spec: { podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'fd00:1::/64'] }, status: { addresses: [{ type: 'Hostname', address: 'hz-1' }, { type: 'InternalIP', address: '192.168.1.11' }, { type: 'InternalIP', address: 'fd00::11' }] } });
  assert.equal(nodeInfo(n), { nodeName: 'hz-1', privateIP: '192.168.1.11', subnets: ['10.244.1.0/24', 'fd00:1::/64'] });
});

test('without podCIDRs, podCIDR is used; without either and no Calico, subnets are empty (never [""])', () => {
  assert.equal(nodeInfo(node('a', { spec: { podCIDR: '10.0.0.0/24' } })).subnets, ['10.0.0.0/24']);
  assert.equal(nodeInfo(node('b')).subnets, []);
  assert.equal(nodeInfo(node('b')).privateIP, '');
});

test('a Calico node takes its confirmed BlockAffinities, and only its own', () => {
  const n = node('hz-1', { metadata: { name: 'hz-1', annotations: { 'projectcalico.org/IPv4Address': '192.168.1.11/24' } } });
  const blocks = [
    { spec: { node: 'hz-1', cidr: '10.244.7.64/26', state: 'confirmed' } },
    { spec: { node: 'hz-1', cidr: '10.244.7.0/26', state: 'confirmed' } },
    { spec: { node: 'hz-1', cidr: '10.244.8.0/26', state: 'pending' } },
    { spec: { node: 'hz-2', cidr: '10.244.9.0/26', state: 'confirmed' } },
  ];
  assert.equal(nodeInfo(n, blocks).subnets, ['10.244.7.0/26', '10.244.7.64/26']);
});

test('status lists every member sorted, and extra-allowed-source-cidrs go to the active tunnel node only', () => {
  const gw: Gateway = { metadata: { name: 'gw-hz', annotations: { 'raven.openyurt.io/extra-allowed-source-cidrs': '172.16.0.0/16, 172.17.0.0/16' } } };
  const s = gatewayStatus(gw, [node('hz-2', { spec: { podCIDR: '10.0.2.0/24' } }), node('hz-1', { spec: { podCIDR: '10.0.1.0/24' } })], [{ nodeName: 'hz-2', type: 'tunnel' }]);
  assert.equal(s.nodes.map((n) => [n.nodeName, n.subnets]), [['hz-1', ['10.0.1.0/24']], ['hz-2', ['10.0.2.0/24', '172.16.0.0/16', '172.17.0.0/16']]]);
});

test('label selectors: matchLabels and every expression operator', () => {
  const labels = { pool: 'hz', zone: 'a' };
  assert.ok(matchesSelector({ matchLabels: { pool: 'hz' } }, labels));
  assert.not.ok(matchesSelector({ matchLabels: { pool: 'qd' } }, labels));
  assert.ok(matchesSelector({ matchExpressions: [{ key: 'zone', operator: 'In', values: ['a', 'b'] }] }, labels));
  assert.not.ok(matchesSelector({ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }, labels));
  assert.ok(matchesSelector({ matchExpressions: [{ key: 'zone', operator: 'Exists' }, { key: 'gpu', operator: 'DoesNotExist' }] }, labels));
  assert.not.ok(matchesSelector({}, labels), 'an empty selector selects nothing, not everything');
  assert.not.ok(matchesSelector(undefined, labels));
});

test('membership is the selector or the member-nodes annotation; overlapping Gateways are reported', () => {
  const hz: Gateway = { metadata: { name: 'gw-hz', annotations: { 'raven-gitops.io/member-nodes': 'hz-1,hz-2' } } };
  const pool: Gateway = { metadata: { name: 'gw-pool' }, spec: { nodeSelector: { matchLabels: { pool: 'x' } } } };
  const nodes = [node('hz-1', { metadata: { name: 'hz-1', labels: { pool: 'x' } } }), node('hz-2'), node('other')];
  assert.ok(isMember(hz, nodes[1]!));
  assert.not.ok(isMember(hz, nodes[2]!));
  const { byNode, conflicts } = assignNodes([pool, hz], nodes);
  assert.equal([...byNode], [['hz-1', 'gw-hz'], ['hz-2', 'gw-hz']]);
  assert.equal(conflicts, [{ node: 'hz-1', gateways: ['gw-hz', 'gw-pool'] }]);
});

test.run();
