/** The election as a table: each row is a situation in a region and the outcome an operator expects. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type Gateway, type GatewayEndpoint, type NodeLike, STANDBY_KEYS_CONFIG } from '../../src/contract/gateway.ts';
import { elect, electionEvents, type ElectionInput } from '../../src/controller/election.ts';
import type { ActiveGatewayObservation, Heartbeat } from '../../src/contract/heartbeat.ts';

const NOW = 1_800_000_000_000;
const GW = 'gw-hangzhou';

interface NodeSpec { ready?: boolean; member?: string | null; exists?: false }
interface BeatSpec { age?: number; duration?: number; backendUp?: boolean; health?: false; sees?: Partial<ActiveGatewayObservation> & { node: string }; publicKey?: string }

interface Case {
  name: string;
  endpoints: [string, 'tunnel' | 'proxy'][];
  active?: [string, 'tunnel' | 'proxy'][];
  replicas?: { tunnel?: number; proxy?: number };
  nodes?: Record<string, NodeSpec>;
  beats?: Record<string, BeatSpec | null>;
  features?: { l3Tunnel: boolean; l7Proxy: boolean };
  want: string[];
  rejected?: Record<string, string>;
}

/** Nodes default to Ready members with fresh, healthy heartbeats. */
function build(c: Case): ElectionInput {
  const names = new Set([...c.endpoints.map(([n]) => n), ...Object.keys(c.nodes ?? {}), ...Object.keys(c.beats ?? {})]);
  const nodes = new Map<string, NodeLike>();
  const memberOf = new Map<string, string>();
  const heartbeats = new Map<string, Heartbeat>();
  for (const name of names) {
    const spec = c.nodes?.[name] ?? {};
    if (spec.exists !== false) nodes.set(name, { metadata: { name }, status: { conditions: [{ type: 'Ready', status: spec.ready === false ? 'False' : 'True' }] } });
    if (spec.member !== null) memberOf.set(name, spec.member ?? GW);
    const beat = c.beats?.[name] === undefined ? {} : c.beats[name];
    if (beat === null) continue;
    heartbeats.set(name, {
      node: name,
      renewTime: NOW - (beat.age ?? 100),
      leaseDurationSeconds: beat.duration ?? 2,
      ...(beat.health !== false && {
        health: {
          backendUp: beat.backendUp ?? true,
          peers: {},
          ...(beat.publicKey && { publicKey: beat.publicKey }),
          ...(beat.sees && { activeGateway: { reachable: true, lanReachable: true, observedAt: NOW - 100, ...beat.sees } }),
        },
      }),
    });
  }
  const gateway: Gateway = {
    metadata: { name: GW },
    spec: {
      tunnelConfig: { Replicas: c.replicas?.tunnel ?? 1 },
      proxyConfig: { Replicas: c.replicas?.proxy ?? 1 },
      endpoints: c.endpoints.map(([nodeName, type]) => ({ nodeName, type, port: type === 'tunnel' ? 4500 : 10262 })),
    },
    status: { activeEndpoints: (c.active ?? []).map(([nodeName, type]) => ({ nodeName, type })) },
  };
  return { gateway, nodes, memberOf, heartbeats, features: c.features ?? { l3Tunnel: true, l7Proxy: true }, now: NOW };
}

const cases: Case[] = [
  { name: 'with no active endpoint, the first candidate in spec order is elected', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], want: ['tunnel/hz-1'] },
  { name: 'the current active endpoint is kept while healthy, even behind an earlier candidate (sticky)', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], active: [['hz-2', 'tunnel']], want: ['tunnel/hz-2'] },
  { name: 'an expired heartbeat on the active fails over to the next candidate', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], active: [['hz-1', 'tunnel']], beats: { 'hz-1': { age: 2500 } }, want: ['tunnel/hz-2'], rejected: { 'tunnel/hz-1': 'heartbeat expired 0.5 s ago' } },
  { name: 'a NotReady node is rejected', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], nodes: { 'hz-1': { ready: false } }, want: ['tunnel/hz-2'], rejected: { 'tunnel/hz-1': 'node is not Ready' } },
  { name: 'a node that does not exist is rejected', endpoints: [['ghost', 'tunnel'], ['hz-2', 'tunnel']], nodes: { ghost: { exists: false } }, want: ['tunnel/hz-2'], rejected: { 'tunnel/ghost': 'does not exist' } },
  { name: 'a node outside the Gateway is rejected', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], nodes: { 'hz-1': { member: null } }, want: ['tunnel/hz-2'], rejected: { 'tunnel/hz-1': 'not a member of gw-hangzhou' } },
  { name: 'a node belonging to another Gateway is rejected', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], nodes: { 'hz-1': { member: 'gw-qingdao' } }, want: ['tunnel/hz-2'], rejected: { 'tunnel/hz-1': 'member of gw-qingdao' } },
  { name: 'a node whose agent never sent a heartbeat is rejected', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], beats: { 'hz-1': null }, want: ['tunnel/hz-2'], rejected: { 'tunnel/hz-1': 'no heartbeat' } },
  { name: 'a heartbeat without a health report is rejected', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], beats: { 'hz-1': { health: false } }, want: ['tunnel/hz-2'], rejected: { 'tunnel/hz-1': 'no health report' } },
  { name: 'a down tunnel backend rejects the tunnel endpoint but not the proxy on the same node', endpoints: [['hz-1', 'tunnel'], ['hz-1', 'proxy'], ['hz-2', 'tunnel']], beats: { 'hz-1': { backendUp: false } }, want: ['proxy/hz-1', 'tunnel/hz-2'], rejected: { 'tunnel/hz-1': 'tunnel backend down' } },
  { name: 'with enable-l7-proxy off, no proxy endpoint is elected and each says why', endpoints: [['hz-1', 'tunnel'], ['hz-1', 'proxy']], features: { l3Tunnel: true, l7Proxy: false }, want: ['tunnel/hz-1'], rejected: { 'proxy/hz-1': 'enable-l7-proxy is off' } },
  { name: 'with enable-l3-tunnel off, no tunnel endpoint is elected', endpoints: [['hz-1', 'tunnel'], ['hz-1', 'proxy']], features: { l3Tunnel: false, l7Proxy: true }, want: ['proxy/hz-1'], rejected: { 'tunnel/hz-1': 'enable-l3-tunnel is off' } },
  { name: 'replicas 0 elects nothing of that type', endpoints: [['hz-1', 'tunnel']], replicas: { tunnel: 0 }, want: [], rejected: { 'tunnel/hz-1': 'replicas is 0' } },
  { name: 'proxy replicas 2 elects two proxies; a proxy endpoint never fills a tunnel slot', endpoints: [['hz-1', 'proxy'], ['hz-2', 'proxy'], ['hz-3', 'proxy']], replicas: { proxy: 2 }, want: ['proxy/hz-1', 'proxy/hz-2'] },
  { name: 'when every candidate is unhealthy, nothing is elected', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], nodes: { 'hz-1': { ready: false }, 'hz-2': { ready: false } }, want: [] },
  { name: 'a healthy standby that reaches its LAN but not the active gateway triggers failover', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], active: [['hz-1', 'tunnel']], beats: { 'hz-2': { sees: { node: 'hz-1', reachable: false } } }, want: ['tunnel/hz-2'], rejected: { 'tunnel/hz-1': 'unreachable from standby hz-2' } },
  { name: 'split-brain guard: a standby cut off from its own LAN does not vote', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], active: [['hz-1', 'tunnel']], beats: { 'hz-2': { sees: { node: 'hz-1', reachable: false, lanReachable: false } } }, want: ['tunnel/hz-1'] },
  { name: 'a standby whose own heartbeat expired does not vote', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel'], ['hz-3', 'tunnel']], active: [['hz-1', 'tunnel']], beats: { 'hz-2': { age: 5000, sees: { node: 'hz-1', reachable: false } } }, want: ['tunnel/hz-1'] },
  { name: 'an observation older than two seconds does not vote', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], active: [['hz-1', 'tunnel']], beats: { 'hz-2': { sees: { node: 'hz-1', reachable: false, observedAt: NOW - 2500 } } }, want: ['tunnel/hz-1'] },
  { name: 'one of two standbys reporting unreachable is no majority: the active stays', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel'], ['hz-3', 'tunnel']], active: [['hz-1', 'tunnel']], beats: { 'hz-2': { sees: { node: 'hz-1', reachable: false } }, 'hz-3': { sees: { node: 'hz-1', reachable: true } } }, want: ['tunnel/hz-1'] },
  { name: 'reports about a node that is not active do not reject it', endpoints: [['hz-1', 'tunnel'], ['hz-2', 'tunnel']], beats: { 'hz-2': { sees: { node: 'hz-1', reachable: false } } }, want: ['tunnel/hz-1'] },
  { name: 'an active endpoint no longer in the spec is replaced', endpoints: [['hz-2', 'tunnel']], active: [['hz-1', 'tunnel']], want: ['tunnel/hz-2'] },
];

for (const c of cases) {
  test(c.name, () => {
    const r = elect(build(c));
    assert.equal(r.active.map((e) => `${e.type}/${e.nodeName}`).sort(), [...c.want].sort());
    for (const [key, text] of Object.entries(c.rejected ?? {})) {
      const [type, node] = key.split('/');
      const rej = r.rejected.find((x) => x.node === node && x.type === type);
      assert.ok(rej, `expected ${key} to be rejected; rejected: ${JSON.stringify(r.rejected)}`);
      assert.ok(rej!.reason.includes(text), `reason for ${key} was "${rej!.reason}", expected it to mention "${text}"`);
    }
    // Every candidate is accounted for exactly once: active, standby or rejected.
    const seen = [...r.active.map((e) => `${e.type}/${e.nodeName}`), ...r.standbys.map((s) => `${s.type}/${s.node}`), ...r.rejected.map((x) => `${x.type}/${x.node}`)].sort();
    const candidates = [...new Set(c.endpoints.map(([n, t]) => `${t}/${n}`))].sort();
    assert.equal(seen, candidates);
  });
}

test('the active endpoint is the spec entry (edits propagate) with the switch and the node\'s public key stamped in', () => {
  const input = build({ name: '', endpoints: [['hz-1', 'tunnel']], active: [['hz-1', 'tunnel']], beats: { 'hz-1': { publicKey: 'pk-hz1=' } }, want: [] });
  input.gateway.spec!.endpoints![0]!.publicIP = '198.51.100.7';
  const [e] = elect(input).active;
  assert.equal(e, { nodeName: 'hz-1', type: 'tunnel', port: 4500, publicIP: '198.51.100.7', config: { 'enable-l3-tunnel': 'true', publicKey: 'pk-hz1=' } });
});

test("the tunnel endpoint also names its standbys' keys (members with a published key), for remote gateways to stage", () => {
  const input = build({
    name: '',
    endpoints: [['hz-1', 'tunnel'], ['hz-3', 'tunnel'], ['hz-2', 'tunnel'], ['hz-4', 'tunnel'], ['hz-5', 'proxy']],
    nodes: { 'hz-4': { member: 'gw-other' } },
    beats: { 'hz-1': { publicKey: 'pk-1=' }, 'hz-2': { publicKey: 'pk-2=', age: 60_000 }, 'hz-3': { publicKey: 'pk-3=' }, 'hz-4': { publicKey: 'pk-4=' }, 'hz-5': { publicKey: 'pk-5=' } },
    want: [],
  });
  const tunnel = elect(input).active.find((e) => e.type === 'tunnel')!;
  assert.is(tunnel.nodeName, 'hz-1');
  // hz-2's heartbeat lapsed, but its key is the one it comes back with; hz-4 belongs elsewhere; hz-5 is no tunnel candidate.
  assert.is(tunnel.config![STANDBY_KEYS_CONFIG], '{"hz-2":"pk-2=","hz-3":"pk-3="}');
  const alone = build({ name: '', endpoints: [['hz-1', 'tunnel']], beats: { 'hz-1': { publicKey: 'pk-1=' } }, want: [] });
  assert.not.ok(STANDBY_KEYS_CONFIG in elect(alone).active[0]!.config!, 'no standbys, no key');
});

test('the result does not depend on the order of nodes, heartbeats or memberships', () => {
  const c = cases.find((x) => x.name.startsWith('one of two standbys'))!;
  const reference = JSON.stringify(elect(build(c)));
  for (let seed = 1; seed <= 20; seed++) {
    const input = build(c);
    let state = seed;
    const rnd = (): number => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648);
    const shuffle = <K, V>(m: ReadonlyMap<K, V>): Map<K, V> => {
      const entries = [...m];
      for (let i = entries.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1));
        [entries[i], entries[j]] = [entries[j]!, entries[i]!];
      }
      return new Map(entries);
    };
    const shuffled = { ...input, nodes: shuffle(input.nodes), heartbeats: shuffle(input.heartbeats), memberOf: shuffle(input.memberOf) };
    assert.is(JSON.stringify(elect(shuffled)), reference, `seed ${seed}`);
  }
});

test('a failover emits ActiveEndpointLost with the reason, then ActiveEndpointElected', () => {
  const c = cases[2]!;
  const before: GatewayEndpoint[] = [{ nodeName: 'hz-1', type: 'tunnel' }];
  const events = electionEvents(GW, before, elect(build(c)));
  assert.equal(events.map((e) => [e.type, e.reason]), [['Warning', 'ActiveEndpointLost'], ['Normal', 'ActiveEndpointElected']]);
  assert.match(events[0]!.message, /hz-1 .*heartbeat expired/);
  assert.match(events[1]!.message, /hz-2 elected active tunnel endpoint of gw-hangzhou/);
  assert.equal(electionEvents(GW, [{ nodeName: 'hz-2', type: 'tunnel' }], elect(build(c))), []);
});

test.run();
