/**
 * Static stability, as pure functions: an expired heartbeat fails a gateway over only while the
 * controller sees the rest of the cluster's heartbeats arrive. The grace after regaining sight, the
 * heartbeat-disruption rule, and a simulated cluster run through an API outage and a single
 * gateway's death, evaluated every 10 ms of logical time as the controller would.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Gateway, NodeLike } from '../../src/contract/gateway.ts';
import { CANDIDATE_LEASE_SECONDS, CANDIDATE_RENEW_MS, type Heartbeat } from '../../src/contract/heartbeat.ts';
import {
  clusterCandidates,
  elect,
  heartbeatDisruption,
  holdReason,
  MASS_LAPSE_MIN_REGIONS,
  HEARTBEAT_GAP_GRACES,
  MASS_LAPSE_SHARE,
  OVERDUE_RENEWALS,
  sightGraceMs,
  type Sight,
} from '../../src/controller/election.ts';

const NOW = 1_800_000_000_000;
const LEASE_MS = CANDIDATE_LEASE_SECONDS * 1000;
/** One renewal, with latency: a heartbeat this old is overdue (not expired); after sight returns, the grace. */
const GRACE_MS = OVERDUE_RENEWALS * CANDIDATE_RENEW_MS;
/** Ages: expired by 100 ms; overdue, not expired. */
const EXPIRED = LEASE_MS + 100;
const OVERDUE = GRACE_MS + 2000;
/** Three regions of two candidates each, as in the seed topology's HA regions. */
const REGIONS: Record<string, string[]> = { 'gw-cloud': ['cloud-1', 'cloud-2'], 'gw-hangzhou': ['hz-1', 'hz-2'], 'gw-qingdao': ['qd-1', 'qd-2'] };
const ALL = Object.values(REGIONS).flat();

function gateway(name: string, active?: string): Gateway {
  return {
    metadata: { name },
    spec: { tunnelConfig: { Replicas: 1 }, proxyConfig: { Replicas: 0 }, endpoints: REGIONS[name]!.map((nodeName) => ({ nodeName, type: 'tunnel' as const, port: 4500 })) },
    status: { activeEndpoints: active ? [{ nodeName: active, type: 'tunnel' }] : [] },
  };
}

const nodes = new Map<string, NodeLike>(ALL.map((name) => [name, { metadata: { name }, status: { conditions: [{ type: 'Ready', status: 'True' }] } }]));
const memberOf = new Map(Object.entries(REGIONS).flatMap(([gw, ns]) => ns.map((n) => [n, gw] as [string, string])));
const candidates = clusterCandidates(Object.keys(REGIONS).map((g) => gateway(g)), memberOf);
const beat = (node: string, renewTime: number, backendUp = true): Heartbeat => ({ node, renewTime, leaseDurationSeconds: CANDIDATE_LEASE_SECONDS, health: { backendUp, peers: {} } });
const beats = (renewed: Record<string, number>): Map<string, Heartbeat> => new Map(Object.entries(renewed).map(([n, t]) => [n, beat(n, t)]));
const activeOf = (gw: Gateway, heartbeats: Map<string, Heartbeat>, now: number, holdExpired?: string): string[] =>
  elect({ gateway: gw, nodes, memberOf, heartbeats, features: { l3Tunnel: true, l7Proxy: true }, now, ...(holdExpired && { holdExpired }) }).active.map((e) => e.nodeName);

test('the thresholds are the documented ones', () => {
  assert.equal([LEASE_MS, CANDIDATE_RENEW_MS, sightGraceMs([]), MASS_LAPSE_SHARE, MASS_LAPSE_MIN_REGIONS], [40_000, 10_000, 12_500, 0.55, 2]);
  assert.is(sightGraceMs([beat('hz-1', NOW), { ...beat('hz-2', NOW), leaseDurationSeconds: 8 }]), 12_500, 'the slowest candidate sets the grace');
  assert.is(sightGraceMs([{ ...beat('hz-2', NOW), leaseDurationSeconds: 8 }]), 2500, 'agents started with --lease-seconds 8');
  assert.equal(candidates.map((c) => `${c.gateway}/${c.node}`), ['gw-cloud/cloud-1', 'gw-cloud/cloud-2', 'gw-hangzhou/hz-1', 'gw-hangzhou/hz-2', 'gw-qingdao/qd-1', 'gw-qingdao/qd-2']);
});

test('a malformed cached Gateway contributes no candidates and breaks nothing', () => {
  const junk = [{ metadata: { name: 'gw-hangzhou' }, spec: { endpoints: 'hz-1' } }, { metadata: { name: 'gw-qingdao' }, spec: { endpoints: [null, { nodeName: 7 }, { nodeName: 'qd-1' }] } }] as unknown as Gateway[];
  assert.equal(clusterCandidates(junk, memberOf), [{ node: 'qd-1', gateway: 'gw-qingdao' }]);
});

test('holdExpired keeps a current active whose heartbeat expired, says why, and elects no candidate on stale evidence', () => {
  const hb = beats({ 'hz-1': NOW - LEASE_MS - 500, 'hz-2': NOW - 100 });
  const r = elect({ gateway: gateway('gw-hangzhou', 'hz-1'), nodes, memberOf, heartbeats: hb, features: { l3Tunnel: true, l7Proxy: true }, now: NOW, holdExpired: 'a test' });
  assert.equal(r.active.map((e) => e.nodeName), ['hz-1']);
  assert.equal(r.held, [{ node: 'hz-1', type: 'tunnel', reason: 'heartbeat expired 0.5 s ago, not failed over: a test' }]);
  assert.equal(activeOf(gateway('gw-hangzhou', 'hz-1'), hb, NOW), ['hz-2'], 'without the hold it fails over');
  // First election during a hold: only a fresh heartbeat elects.
  assert.equal(activeOf(gateway('gw-hangzhou'), hb, NOW, 'a test'), ['hz-2']);
  assert.equal(activeOf(gateway('gw-hangzhou'), beats({ 'hz-1': NOW - LEASE_MS - 500, 'hz-2': NOW - LEASE_MS - 1000 }), NOW, 'a test'), []);
  // A standby (not active) with an expired heartbeat stays rejected, and nothing is held.
  const standby = elect({ gateway: gateway('gw-hangzhou', 'hz-2'), nodes, memberOf, heartbeats: hb, features: { l3Tunnel: true, l7Proxy: true }, now: NOW, holdExpired: 'a test' });
  assert.equal([standby.active.map((e) => e.nodeName), standby.held], [['hz-2'], []]);
});

test('holdExpired forgives only the expiry: a down backend or a NotReady node still fails over', () => {
  const down = new Map([['hz-1', beat('hz-1', NOW - LEASE_MS - 500, false)], ['hz-2', beat('hz-2', NOW - 100)]]);
  assert.equal(activeOf(gateway('gw-hangzhou', 'hz-1'), down, NOW, 'a test'), ['hz-2']);
  const notReady = new Map(nodes);
  notReady.set('hz-1', { metadata: { name: 'hz-1' }, status: { conditions: [{ type: 'Ready', status: 'False' }] } });
  const r = elect({ gateway: gateway('gw-hangzhou', 'hz-1'), nodes: notReady, memberOf, heartbeats: beats({ 'hz-1': NOW - LEASE_MS - 500, 'hz-2': NOW - 100 }), features: { l3Tunnel: true, l7Proxy: true }, now: NOW, holdExpired: 'a test' });
  assert.equal(r.active.map((e) => e.nodeName), ['hz-2']);
});

interface DisruptionCase {
  name: string;
  /** Milliseconds since each candidate's last renewal; absent: no heartbeat at all. */
  ages: Record<string, number>;
  disrupted: boolean;
  evidence?: string;
}

const fresh = Object.fromEntries(ALL.map((n) => [n, 300]));
const disruptionCases: DisruptionCase[] = [
  { name: 'a healthy cluster is not disrupted', ages: fresh, disrupted: false, evidence: '0/6 gateway candidates missed their heartbeat renewal, in 0 regions; freshest renewal 0.3 s ago' },
  { name: 'one region losing its active gateway is that region\'s fault', ages: { ...fresh, 'hz-1': EXPIRED }, disrupted: false },
  { name: 'a whole region missing (its WAN, or its link to the API) is one region: no disruption', ages: { ...fresh, 'hz-1': EXPIRED, 'hz-2': EXPIRED }, disrupted: false },
  { name: 'two actives in two regions dying together is 2/6, under the share', ages: { ...fresh, 'hz-1': EXPIRED, 'qd-1': EXPIRED }, disrupted: false },
  { name: 'every heartbeat overdue (the API stopped) is a disruption', ages: Object.fromEntries(ALL.map((n) => [n, OVERDUE])), disrupted: true, evidence: '6/6 gateway candidates missed their heartbeat renewal, in 3 regions (gw-cloud, gw-hangzhou, gw-qingdao); freshest renewal 14.5 s ago' },
  { name: 'four of six in three regions overdue (above 55%) is a disruption', ages: { ...fresh, 'hz-1': OVERDUE, 'qd-1': OVERDUE, 'cloud-1': OVERDUE, 'cloud-2': OVERDUE }, disrupted: true },
  { name: 'after an outage of any length, the nodes alive when it began still count', ages: Object.fromEntries(ALL.map((n) => [n, 600_000])), disrupted: true },
  { name: 'nodes dead long before the rest lapsed are not counted', ages: { ...fresh, 'hz-1': 600_000, 'hz-2': 600_000, 'qd-1': 600_000, 'qd-2': EXPIRED }, disrupted: false, evidence: '1/3 gateway candidates missed their heartbeat renewal, in 1 region (gw-qingdao); freshest renewal 0.3 s ago' },
  { name: 'candidates whose agents never wrote a heartbeat are not counted', ages: { 'hz-1': EXPIRED, 'qd-1': EXPIRED, 'cloud-1': 200 }, disrupted: true },
];

for (const c of disruptionCases) {
  test(`disruption: ${c.name}`, () => {
    const d = heartbeatDisruption(candidates, beats(Object.fromEntries(Object.entries(c.ages).map(([n, age]) => [n, NOW - age]))), NOW);
    assert.is(d.disrupted, c.disrupted, d.evidence);
    if (c.evidence) assert.is(d.evidence, c.evidence);
  });
}

test('holdReason: a disruption holds; sight regained holds for the grace, then not', () => {
  const calm = heartbeatDisruption(candidates, beats(Object.fromEntries(ALL.map((n) => [n, NOW - 100]))), NOW);
  const sight: Sight = { since: NOW, why: 'caches synced', graceMs: GRACE_MS, disruption: calm };
  assert.match(holdReason(sight, NOW + GRACE_MS - 1) ?? '', /regained sight of heartbeats 12\.5 s ago \(caches synced\); waiting 12\.5 s for fresh heartbeats/);
  assert.is(holdReason(sight, NOW + GRACE_MS), undefined);
  assert.is(holdReason({ graceMs: GRACE_MS, disruption: calm }, NOW), undefined);
  const stopped = heartbeatDisruption(candidates, beats(Object.fromEntries(ALL.map((n) => [n, NOW - OVERDUE]))), NOW);
  assert.match(holdReason({ graceMs: GRACE_MS, disruption: stopped }, NOW) ?? '', /^heartbeat disruption, a control-plane fault rather than gateway faults: 6\/6/);
});

/** The simulation's tick. */
const STEP = 50;

/**
 * A logical-time cluster: agents renew every CANDIDATE_RENEW_MS at seeded random phases; the
 * "controller" evaluates every Gateway every STEP ms as controller.ts does (disruption, then the grace
 * after its end or after a gap in heartbeats) and applies the election. Returns every change of
 * active gateway, with its time.
 */
function simulate(opts: { seed: number; until: number; renews: (node: string, t: number) => boolean }): { changes: string[]; active: Record<string, string> } {
  let state = opts.seed;
  const rnd = (): number => (state = (state * 1103515245 + 12345) % 2147483648) / 2147483648;
  const phase = new Map(ALL.map((n) => [n, STEP * Math.floor((rnd() * CANDIDATE_RENEW_MS) / STEP)]));
  const hb = new Map<string, Heartbeat>(ALL.map((n) => [n, beat(n, NOW - CANDIDATE_RENEW_MS + phase.get(n)!)]));
  const active: Record<string, string> = { 'gw-cloud': 'cloud-1', 'gw-hangzhou': 'hz-2', 'gw-qingdao': 'qd-1' };
  const changes: string[] = [];
  let sightSince: number | undefined = NOW - 60_000;
  let lastEvent = NOW;
  let disrupted = false;
  for (let t = NOW; t <= NOW + opts.until; t += STEP) {
    for (const n of ALL) {
      if ((t - NOW - phase.get(n)!) % CANDIDATE_RENEW_MS === 0 && opts.renews(n, t)) {
        if (t - lastEvent > HEARTBEAT_GAP_GRACES * sightGraceMs(hb.values())) sightSince = t;
        lastEvent = t;
        hb.set(n, beat(n, t));
      }
    }
    const d = heartbeatDisruption(candidates, hb, t);
    if (disrupted && !d.disrupted) sightSince = t;
    disrupted = d.disrupted;
    const hold = holdReason({ ...(sightSince !== undefined && { since: sightSince, why: 'sim' }), graceMs: sightGraceMs(hb.values()), disruption: d }, t);
    for (const gw of Object.keys(REGIONS)) {
      const [next] = activeOf(gateway(gw, active[gw]), hb, t, hold);
      if (next !== active[gw]) changes.push(`${t - NOW} ${gw}: ${active[gw]} -> ${next ?? 'none'}`);
      active[gw] = next ?? '';
    }
  }
  return { changes, active };
}

test('an API outage longer than the lease, then recovery with renewals in random order: no gateway changes', () => {
  for (let seed = 1; seed <= 30; seed++) {
    // The API stops at 5 s for 50 s; after it returns, each agent's first renewal lands at its own phase.
    const { changes } = simulate({ seed, until: 80_000, renews: (_n, t) => t - NOW < 5000 || t - NOW >= 55_000 });
    assert.equal(changes, [], `seed ${seed}`);
  }
});

test('a short blink (under one lease) and a long one: no gateway changes', () => {
  for (const [from, to] of [[5000, 5000 + GRACE_MS], [5000, 5000 + LEASE_MS / 2], [5000, 5000 + 3 * LEASE_MS]]) {
    for (let seed = 1; seed <= 10; seed++) {
      const { changes } = simulate({ seed, until: 5000 + 4 * LEASE_MS, renews: (_n, t) => t - NOW < from! || t - NOW >= to! });
      assert.equal(changes, [], `outage ${from}..${to} ms, seed ${seed}`);
    }
  }
});

test('a gateway whose heartbeat alone stops (no standby or remote evidence) fails over when it expires, not later', () => {
  for (let seed = 1; seed <= 30; seed++) {
    let diedAt = 0;
    const { changes } = simulate({
      seed,
      until: 3000 + LEASE_MS + 2 * CANDIDATE_RENEW_MS,
      renews: (n, t) => {
        if (n !== 'hz-2' || t - NOW < 3000) return true;
        diedAt ||= t;
        return false;
      },
    });
    assert.is(changes.length, 1, `seed ${seed}: ${changes.join('; ')}`);
    const [at, what] = changes[0]!.split(' gw-hangzhou: ');
    assert.is(what, 'hz-2 -> hz-1');
    // Its last renewal was one period before diedAt; the lease runs out LEASE_MS after that; the next tick decides.
    const expiry = diedAt - NOW - CANDIDATE_RENEW_MS + LEASE_MS;
    assert.ok(Number(at) > expiry && Number(at) <= expiry + STEP, `seed ${seed}: failed over at ${at} ms, heartbeat expired at ${expiry} ms`);
  }
});

test('a gateway that died during an outage fails over once the grace after recovery has passed', () => {
  const { changes, active } = simulate({ seed: 7, until: 90_000, renews: (n, t) => (t - NOW < 5000 || t - NOW >= 55_000) && !(n === 'qd-1' && t - NOW >= 10_000) });
  assert.equal(active['gw-qingdao'], 'qd-2');
  assert.is(changes.length, 1, changes.join('; '));
  const at = Number(changes[0]!.split(' ')[0]);
  assert.ok(at >= 55_000 + GRACE_MS, `qd-1 failed over at ${at} ms, before the grace after recovery ended`);
});

test.run();
