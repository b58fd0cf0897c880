/**
 * The agent's heartbeat writer against the embedded API server, on a fake clock: the write budget
 * (one request per renewal, a quarter lease apart), a write with news counting as a renewal, and
 * the Lease being written by someone else or deleted in between.
 */
import * as k8s from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HeartbeatWriter, RETRY_FIRST_MS, writeDeadlineMs } from '../../src/agent/heartbeat.ts';
import { type AgentHealth, CANDIDATE_LEASE_SECONDS, CANDIDATE_RENEW_MS, HEALTH_ANNOTATION, leaseName, MEMBER_LEASE_SECONDS, MEMBER_RENEW_MS, parseHealth, renewPeriodMs } from '../../src/contract/heartbeat.ts';
import { Timers } from '../../src/platform/timers.ts';
import { startLab } from '../support/apiserver-support.ts';
import { FakeClock } from '../support/fake-clock.ts';

const NS = 'raven-system';

async function setup(opts: { candidate?: boolean; leaseSeconds?: number } = {}) {
  const lab = await startLab();
  await lab.core.createNamespace({ body: { metadata: { name: NS } } });
  const clock = new FakeClock(() => new Promise((r) => setTimeout(r, 5)));
  const timers = new Timers(clock);
  const coordination = lab.kc.makeApiClient(k8s.CoordinationV1Api);
  let health: AgentHealth = { backendUp: true, peers: {} };
  const errors: string[] = [];
  const writer = new HeartbeatWriter(coordination, {
    node: 'hz-1',
    namespace: NS,
    clock,
    timers,
    ...(opts.leaseSeconds !== undefined && { leaseSeconds: opts.leaseSeconds }),
    candidate: () => opts.candidate ?? true,
    health: async () => health,
    onError: (e) => errors.push(e.message),
  });
  const leaseRequests = (): string[] =>
    lab.api
      .requests()
      .filter((r) => r.path.includes('/leases'))
      .map((r) => `${r.method} ${r.status}`);
  const lease = () => coordination.readNamespacedLease({ name: leaseName('hz-1'), namespace: NS });
  /** Lets the writes the clock started reach the API server. */
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5));
  };
  return {
    lab, clock, writer, errors, coordination, leaseRequests, lease, settle,
    setHealth: (h: AgentHealth) => (health = h),
    close: async () => {
      writer.stop();
      timers.stop();
      await lab.api.close();
    },
  };
}

test('the contract: a quarter lease apart, kubelet\'s rate for candidates, slower for members', () => {
  assert.equal([CANDIDATE_LEASE_SECONDS, CANDIDATE_RENEW_MS, MEMBER_LEASE_SECONDS, MEMBER_RENEW_MS], [40, 10_000, 120, 30_000]);
  assert.is(renewPeriodMs(2), 500);
});

test('steady state: one request per renewal, every renew period, and nothing in between', async () => {
  const s = await setup();
  try {
    s.writer.start();
    await s.settle();
    assert.equal(s.leaseRequests(), ['GET 404', 'POST 201'], 'the first write finds no Lease and creates it');
    s.lab.api.clearRequests();
    for (let i = 0; i < 6; i++) {
      await s.clock.advance(CANDIDATE_RENEW_MS - 1);
      await s.settle();
      assert.is(s.leaseRequests().length, i, `nothing before the period ends (renewal ${i + 1})`);
      await s.clock.advance(1);
      await s.settle();
      assert.equal(s.leaseRequests().slice(i), ['PUT 200'], 'then one replace, not a read and a replace');
    }
    const l = await s.lease();
    assert.is(l.spec?.leaseDurationSeconds, CANDIDATE_LEASE_SECONDS);
    assert.is(l.spec?.holderIdentity, 'hz-1');
    assert.equal(s.errors, []);
  } finally {
    await s.close();
  }
});

test('a write with news is sent at once and counts as a renewal: the next one is a period after it', async () => {
  const s = await setup();
  try {
    s.writer.start();
    await s.settle();
    await s.clock.advance(4000);
    s.lab.api.clearRequests();
    s.setHealth({ backendUp: false, peers: {} });
    await s.writer.beatNow();
    assert.equal(s.leaseRequests(), ['PUT 200']);
    assert.is(parseHealth((await s.lease()).metadata?.annotations?.[HEALTH_ANNOTATION])?.backendUp, false, 'the news is in the Lease');
    s.lab.api.clearRequests();
    await s.clock.advance(CANDIDATE_RENEW_MS - 100);
    await s.settle();
    assert.equal(s.leaseRequests(), [], 'the renewal due 6 s after the news is not sent: the news renewed');
    await s.clock.advance(100);
    await s.settle();
    assert.equal(s.leaseRequests().filter((r) => r.startsWith('PUT')), ['PUT 200']);
  } finally {
    await s.close();
  }
});

test('the Lease written by someone else (409) is read and replaced; deleted (404), it is created again', async () => {
  const s = await setup();
  try {
    s.writer.start();
    await s.settle();
    const l = await s.lease();
    await s.coordination.replaceNamespacedLease({ name: l.metadata!.name!, namespace: NS, body: { ...l, metadata: { ...l.metadata, labels: { edited: 'yes' } } } });
    s.lab.api.clearRequests();
    await s.clock.advance(CANDIDATE_RENEW_MS);
    await s.settle();
    assert.equal(s.leaseRequests(), ['PUT 409', 'GET 200', 'PUT 200']);
    assert.is((await s.lease()).metadata?.labels?.edited, 'yes', 'what the other writer added is kept');
    await s.coordination.deleteNamespacedLease({ name: l.metadata!.name!, namespace: NS });
    s.lab.api.clearRequests();
    await s.clock.advance(CANDIDATE_RENEW_MS);
    await s.settle();
    assert.equal(s.leaseRequests(), ['PUT 404', 'GET 404', 'POST 201']);
    assert.equal(s.errors, []);
  } finally {
    await s.close();
  }
});

test('members renew every 30 s with a 120 s lease; --lease-seconds sets a candidate\'s', async () => {
  const member = await setup({ candidate: false });
  try {
    member.writer.start();
    await member.settle();
    member.lab.api.clearRequests();
    await member.clock.advance(CANDIDATE_RENEW_MS * 2);
    await member.settle();
    assert.equal(member.leaseRequests(), []);
    await member.clock.advance(MEMBER_RENEW_MS - CANDIDATE_RENEW_MS * 2);
    await member.settle();
    assert.equal(member.leaseRequests(), ['PUT 200']);
    assert.is((await member.lease()).spec?.leaseDurationSeconds, MEMBER_LEASE_SECONDS);
  } finally {
    await member.close();
  }
  const fast = await setup({ leaseSeconds: 2 });
  try {
    fast.writer.start();
    await fast.settle();
    fast.lab.api.clearRequests();
    for (let i = 0; i < 4; i++) {
      await fast.clock.advance(500);
      await fast.settle();
    }
    assert.equal(fast.leaseRequests(), ['PUT 200', 'PUT 200', 'PUT 200', 'PUT 200'], 'every 500 ms');
    assert.is((await fast.lease()).spec?.leaseDurationSeconds, 2);
  } finally {
    await fast.close();
  }
});

test('last(): after the write in flight, one more with the longer lease; the loop stops', async () => {
  const s = await setup({ leaseSeconds: 2 });
  try {
    s.writer.start();
    await s.settle();
    assert.ok(await s.writer.last(15, 1000));
    assert.is((await s.lease()).spec?.leaseDurationSeconds, 15);
    s.lab.api.clearRequests();
    await s.clock.advance(10_000);
    await s.settle();
    assert.equal(s.leaseRequests(), [], 'no renewal after the last');
  } finally {
    await s.close();
  }
});

test('a write the API server takes and never answers is aborted at its deadline; the news queued behind it is written then', async () => {
  const s = await setup();
  const HUNG_MS = 3000;
  try {
    s.writer.start();
    await s.settle();
    s.lab.api.faults.setLatency(HUNG_MS, { method: 'PUT', path: /\/leases\// });
    await s.clock.advance(CANDIDATE_RENEW_MS);
    await s.settle();
    s.lab.api.faults.clear();
    s.lab.api.clearRequests();
    s.setHealth({ backendUp: false, peers: {} });
    const news = s.writer.beatNow();
    assert.equal(s.leaseRequests(), [], 'the renewal is in flight and nothing else is sent beside it');
    await s.clock.advance(writeDeadlineMs(CANDIDATE_LEASE_SECONDS) - 1);
    await s.settle();
    assert.equal(s.leaseRequests(), [], 'nothing before the deadline');
    await s.clock.advance(1);
    // Without a deadline the news waits for the hung request (3 s here, forever for a dead connection).
    let timer: NodeJS.Timeout | undefined;
    const written = await Promise.race([news.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), HUNG_MS / 2)))]);
    clearTimeout(timer);
    assert.ok(written, 'the news is written before the hung request would have been answered');
    await s.settle();
    assert.equal(s.leaseRequests(), ['GET 200', 'PUT 200'], 'the Lease is read again: whether the aborted write landed is unknown');
    assert.is(parseHealth((await s.lease()).metadata?.annotations?.[HEALTH_ANNOTATION])?.backendUp, false, 'the news is in the Lease');
    assert.ok(s.errors.some((e) => e.includes(`no answer from the API server within ${writeDeadlineMs(CANDIDATE_LEASE_SECONDS)} ms`)), s.errors.join('; '));
  } finally {
    await s.close();
  }
});

test('a failed write is retried after 0.5, 1, 2 s, ... not a whole period later; success starts over', async () => {
  const s = await setup();
  try {
    s.writer.start();
    await s.settle();
    const fails = s.lab.api.faults.failNext({ method: 'PUT', path: /\/leases\//, count: 3, status: 503 });
    s.lab.api.clearRequests();
    await s.clock.advance(CANDIDATE_RENEW_MS);
    await s.settle();
    const puts = (): number => s.leaseRequests().filter((r) => r.startsWith('PUT')).length;
    assert.is(puts(), 1);
    for (const [i, wait] of [RETRY_FIRST_MS, RETRY_FIRST_MS * 2, RETRY_FIRST_MS * 4].entries()) {
      await s.clock.advance(wait - 60);
      await s.settle();
      assert.is(puts(), i + 1, `no retry before ${wait} ms`);
      await s.clock.advance(60);
      await s.settle();
      assert.is(puts(), i + 2, `retry ${i + 1} after ${wait} ms`);
    }
    assert.is(fails.hits, 3);
    assert.is(s.errors.length, 3);
    assert.equal(s.leaseRequests().slice(-2), ['GET 200', 'PUT 200'], 'the fourth try lands');
    s.lab.api.clearRequests();
    await s.clock.advance(CANDIDATE_RENEW_MS - 100);
    await s.settle();
    assert.equal(s.leaseRequests(), [], 'then a renewal a period after it, as before');
    await s.clock.advance(100);
    await s.settle();
    assert.equal(s.leaseRequests(), ['PUT 200']);
  } finally {
    await s.close();
  }
});

test.run();
