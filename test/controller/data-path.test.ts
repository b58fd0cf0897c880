/**
 * Data-path failover in the election: remote regions' tunnel probes of the active gateway and, in
 * the same reports, of the standbys they stage. The cloud region has candidates cloud-gw-1
 * (active), cloud-gw-2 and cloud-gw-3; hangzhou's active is hz-1 (standby hz-2), qingdao's is qd-1.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Gateway, NodeLike } from '../../src/contract/gateway.ts';
import { DATAPATH_HOLD_DOWN_MS, elect, type ElectionInput } from '../../src/controller/election.ts';
import type { Heartbeat, PeerHealth } from '../../src/contract/heartbeat.ts';

const NOW = 1_800_000_000_000;
const REMOTES = new Map([['gw-cloud', 'cloud-gw-1'], ['gw-hangzhou', 'hz-1'], ['gw-qingdao', 'qd-1']]);

const UP = { lostProbes: 0, answeredProbes: 12 };
const DOWN = { lostProbes: 4, answeredProbes: 0 };
const lost = (node: string, lostForMs = 600, standbys: PeerHealth['standbys'] = {}): PeerHealth => ({ node, lostProbes: 3, answeredProbes: 0, lostForMs, loss: 0.3, standbys });
const reached = (node: string, standbys: PeerHealth['standbys'] = {}): PeerHealth => ({ node, lostProbes: 0, answeredProbes: 10, loss: 0, rttMs: 20, standbys });

/** Heartbeats: node -> peers it reports (fresh unless `age` says otherwise). */
function input(gateway: 'gw-cloud' | 'gw-hangzhou', reports: Record<string, Record<string, PeerHealth>>, extra: Partial<ElectionInput> & { ages?: Record<string, number> } = {}): ElectionInput {
  const candidates = gateway === 'gw-cloud' ? ['cloud-gw-1', 'cloud-gw-2', 'cloud-gw-3'] : ['hz-1', 'hz-2'];
  const all = ['cloud-gw-1', 'cloud-gw-2', 'cloud-gw-3', 'hz-1', 'hz-2', 'qd-1'];
  const nodes = new Map<string, NodeLike>(all.map((name) => [name, { metadata: { name }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }]));
  const memberOf = new Map(all.map((n) => [n, n.startsWith('cloud') ? 'gw-cloud' : n.startsWith('hz') ? 'gw-hangzhou' : 'gw-qingdao']));
  const heartbeats = new Map<string, Heartbeat>(
    all.map((node) => [node, { node, renewTime: NOW - (extra.ages?.[node] ?? 100), leaseDurationSeconds: 2, health: { backendUp: true, peers: reports[node] ?? {} } }]),
  );
  const gw: Gateway = {
    metadata: { name: gateway },
    spec: { tunnelConfig: { Replicas: 1 }, endpoints: candidates.map((nodeName) => ({ nodeName, type: 'tunnel' as const, port: 4500 })) },
    status: { activeEndpoints: [{ nodeName: candidates[0]!, type: 'tunnel' }] },
  };
  const { ages: _ages, ...rest } = extra;
  return { gateway: gw, nodes, memberOf, heartbeats, features: { l3Tunnel: true, l7Proxy: false }, now: NOW, remoteActives: REMOTES, ...rest };
}

const activeOf = (i: ElectionInput): string[] => elect(i).active.map((e) => e.nodeName);

/** The cloud active's uplink is down: both edges lose it, and reach cloud-gw-2 (own uplink) through its staged session. */
const UPLINK_DOWN = {
  'hz-1': { 'gw-cloud': lost('cloud-gw-1', 600, { 'cloud-gw-2': UP, 'cloud-gw-3': DOWN }) },
  'qd-1': { 'gw-cloud': lost('cloud-gw-1', 850, { 'cloud-gw-2': UP }) },
  'cloud-gw-1': { 'gw-hangzhou': lost('hz-1', 600, { 'hz-2': DOWN }), 'gw-qingdao': lost('qd-1') },
};

test('an active whose uplink failed is replaced by the standby the regions that lost it still reach, with the evidence', () => {
  const r = elect(input('gw-cloud', UPLINK_DOWN));
  assert.equal(r.active.map((e) => e.nodeName), ['cloud-gw-2']);
  const why = r.rejected.find((x) => x.node === 'cloud-gw-1')!.reason;
  assert.is(why, '2/2 remote regions lost gw-cloud via cloud-gw-1 for 600 ms or more (gw-hangzhou, gw-qingdao); 2/2 reach standby cloud-gw-2');
  assert.equal(r.dataPathFailover, { from: 'cloud-gw-1', to: 'cloud-gw-2', evidence: why });
  assert.equal(r.held, []);
  // The cut gateway lost everyone: its reports blame nobody (it reaches no region, nor hangzhou's standby).
  assert.equal(elect(input('gw-hangzhou', UPLINK_DOWN)).active.map((e) => e.nodeName), ['hz-1']);
  assert.equal(elect(input('gw-hangzhou', UPLINK_DOWN)).held, []);
});

test('the replacement is the standby reached by the most regions, not the first in spec order', () => {
  const r = elect(input('gw-cloud', {
    ...UPLINK_DOWN,
    'hz-1': { 'gw-cloud': lost('cloud-gw-1', 600, { 'cloud-gw-2': DOWN, 'cloud-gw-3': UP }) },
    'qd-1': { 'gw-cloud': lost('cloud-gw-1', 600, { 'cloud-gw-2': UP, 'cloud-gw-3': UP }) },
  }));
  assert.equal(r.active.map((e) => e.nodeName), ['cloud-gw-3']);
});

test('a shared uplink (NATed edge) down: every candidate is cut alike, so nothing changes, and the held decision says why', () => {
  // hangzhou's NAT router lost its uplink: the cloud loses hz-1 and cannot reach hz-2 either.
  const reports = { 'cloud-gw-1': { 'gw-hangzhou': lost('hz-1', 600, { 'hz-2': DOWN }), 'gw-qingdao': reached('qd-1') }, 'hz-1': { 'gw-cloud': lost('cloud-gw-1', 600, { 'cloud-gw-2': DOWN }) } };
  const r = elect(input('gw-hangzhou', reports));
  assert.equal(r.active.map((e) => e.nodeName), ['hz-1']);
  assert.equal(r.dataPathFailover, undefined);
  assert.equal(r.held.map((h) => h.node), ['hz-1']);
  assert.match(r.held[0]!.reason, /^data path: 1\/1 remote regions lost gw-hangzhou via hz-1 .*; not failed over: no standby is known to be better$/);
  // ...and the cloud, which hangzhou lost too, is not blamed: hangzhou reaches no other region, nor a cloud standby.
  const cloud = elect(input('gw-cloud', reports));
  assert.equal(cloud.active.map((e) => e.nodeName), ['cloud-gw-1']);
  assert.equal(cloud.held, []);
});

test('no churn from evidence that does not count', () => {
  const base = input('gw-cloud', UPLINK_DOWN);
  assert.equal(activeOf(base), ['cloud-gw-2'], 'the situation itself fails over');
  assert.equal(activeOf(input('gw-cloud', { ...UPLINK_DOWN, 'qd-1': { 'gw-cloud': reached('cloud-gw-1', { 'cloud-gw-2': UP }) } })), ['cloud-gw-1'], 'half the regions is no majority');
  const noisy = (standbys: PeerHealth['standbys']): PeerHealth => ({ node: 'cloud-gw-1', lostProbes: 2, answeredProbes: 0, lostForMs: 300, standbys });
  assert.equal(activeOf(input('gw-cloud', { ...UPLINK_DOWN, 'hz-1': { 'gw-cloud': noisy({ 'cloud-gw-2': UP }) }, 'qd-1': { 'gw-cloud': noisy({ 'cloud-gw-2': UP }) } })), ['cloud-gw-1'], 'two lost probes are noise');
  const barely = { lostProbes: 0, answeredProbes: 9 };
  assert.equal(activeOf(input('gw-cloud', { ...UPLINK_DOWN, 'hz-1': { 'gw-cloud': lost('cloud-gw-1', 600, { 'cloud-gw-2': barely }) }, 'qd-1': { 'gw-cloud': lost('cloud-gw-1', 600, { 'cloud-gw-2': barely }) } })), ['cloud-gw-1'], 'a standby not answering a whole window cleanly is no proof (the witness\'s own link may be lossy)');
  assert.equal(activeOf(input('gw-cloud', { ...UPLINK_DOWN, 'hz-1': { 'gw-cloud': lost('cloud-gw-0', 600, { 'cloud-gw-2': UP }) }, 'qd-1': { 'gw-cloud': lost('cloud-gw-0', 600, { 'cloud-gw-2': UP }) } })), ['cloud-gw-1'], 'reports about a previous active');
  assert.equal(activeOf(input('gw-cloud', { ...UPLINK_DOWN, 'hz-2': UPLINK_DOWN['hz-1'], 'hz-1': {}, 'qd-1': {} })), ['cloud-gw-1'], 'a remote standby\'s reports are not its region\'s');
  assert.equal(activeOf(input('gw-cloud', UPLINK_DOWN, { ages: { 'hz-1': 5000, 'qd-1': 5000 } })), ['cloud-gw-1'], 'reports in lapsed heartbeats');
  assert.equal(activeOf(input('gw-cloud', { ...UPLINK_DOWN, 'hz-1': { 'gw-cloud': lost('cloud-gw-1') }, 'qd-1': { 'gw-cloud': lost('cloud-gw-1') } })), ['cloud-gw-1'], 'no report on any standby (IPsec stages none): never towards an unknown');
  const { remoteActives: _r, ...noRemotes } = base;
  assert.equal(activeOf(noRemotes), ['cloud-gw-1'], 'without the remote actives nothing is weighed');
});

test('regions that lost the active but reach nothing else (stale standby sessions) are no witnesses: held, and the log says so; a lone one says nothing', () => {
  // Both edges lost cloud-gw-1 and reach neither each other (relayed through it) nor a cloud standby.
  const blind = { 'hz-1': { 'gw-cloud': lost('cloud-gw-1', 600, { 'cloud-gw-2': DOWN }) }, 'qd-1': { 'gw-cloud': lost('cloud-gw-1', 900, { 'cloud-gw-2': DOWN }), 'gw-hangzhou': lost('hz-1') } };
  const r = elect(input('gw-cloud', blind));
  assert.equal(r.active.map((e) => e.nodeName), ['cloud-gw-1']);
  assert.equal(r.dataPathFailover, undefined);
  assert.equal(r.held.map((h) => h.reason), [
    'data path: 2/2 remote regions lost gw-cloud via cloud-gw-1 for 600 ms or more (gw-hangzhou, gw-qingdao); 2 of them (gw-hangzhou, gw-qingdao) reach no other region and no standby of gw-cloud, so may be the ones cut off; not failed over: too few credible witnesses',
  ]);
  // Once a standby is reached again (its session renewed), the same loss is evidence.
  const renewed = { ...blind, 'hz-1': { 'gw-cloud': lost('cloud-gw-1', 600, { 'cloud-gw-2': UP }) }, 'qd-1': { ...blind['qd-1'], 'gw-cloud': lost('cloud-gw-1', 900, { 'cloud-gw-2': UP }) } };
  assert.equal(activeOf(input('gw-cloud', renewed)), ['cloud-gw-2']);
  // One region of two lost it and reaches nothing: most likely that region is the one cut off.
  const lone = { 'hz-1': blind['hz-1'], 'qd-1': { 'gw-cloud': reached('cloud-gw-1') } };
  assert.equal(elect(input('gw-cloud', lone)).held, []);
});

test('hold-down: within DATAPATH_HOLD_DOWN_MS of the last data-path failover the active stays, held; after it, the evidence counts again', () => {
  const within = elect(input('gw-cloud', UPLINK_DOWN, { dataPathHoldUntil: NOW + 1 }));
  assert.equal(within.active.map((e) => e.nodeName), ['cloud-gw-1']);
  assert.match(within.held[0]!.reason, new RegExp(`another data-path failover of this Gateway was made ${DATAPATH_HOLD_DOWN_MS / 1000} s ago or less`));
  assert.equal(activeOf(input('gw-cloud', UPLINK_DOWN, { dataPathHoldUntil: NOW })), ['cloud-gw-2']);
});

test('node faults still fail over at once during a hold-down', () => {
  const r = elect(input('gw-cloud', {}, { dataPathHoldUntil: NOW + DATAPATH_HOLD_DOWN_MS, ages: { 'cloud-gw-1': 2500 } }));
  assert.equal(r.active.map((e) => e.nodeName), ['cloud-gw-2']);
});

test('the verdict does not depend on the order of heartbeats or remote Gateways', () => {
  const a = input('gw-cloud', UPLINK_DOWN);
  const b = { ...a, heartbeats: new Map([...a.heartbeats].reverse()), remoteActives: new Map([...REMOTES].reverse()) };
  assert.equal(elect(b), elect(a));
});

test.run();
