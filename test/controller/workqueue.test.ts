/** The controller's work queue and metrics: the guarantees reconcile loops rely on. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WorkQueue, type Timers } from '../../src/controller/workqueue.ts';
import { Counter, Histogram, Registry } from '../../src/platform/metrics.ts';

/** Timers driven by hand: `advance(ms)` fires what is due. */
function fakeTimers(): Timers & { advance(ms: number): void; pending(): number[] } {
  let now = 0;
  let seq = 0;
  const due = new Map<number, { at: number; fn: () => void }>();
  return {
    setTimeout: (fn, ms) => (due.set(++seq, { at: now + ms, fn }), seq),
    clearTimeout: (h) => void due.delete(h as number),
    advance(ms) {
      now += ms;
      for (const [h, t] of [...due].sort(([, a], [, b]) => a.at - b.at)) if (t.at <= now) (due.delete(h), t.fn());
    },
    pending: () => [...due.values()].map((t) => t.at - now),
  };
}

test('a key added many times is queued once', async () => {
  const q = new WorkQueue<string>();
  for (let i = 0; i < 5; i++) q.add('gw-a');
  q.add('gw-b');
  assert.is(q.length, 2);
  assert.is(await q.get(), 'gw-a');
  assert.is(await q.get(), 'gw-b');
});

test('a key added while being processed is processed again afterwards, never concurrently', async () => {
  const q = new WorkQueue<string>();
  q.add('gw-a');
  const k = await q.get();
  q.add('gw-a');
  assert.is(q.length, 0, 'not handed out while in progress');
  q.done(k!);
  assert.is(q.length, 1);
  assert.is(await q.get(), 'gw-a');
});

test('a waiting worker receives the next key added', async () => {
  const q = new WorkQueue<string>();
  const next = q.get();
  q.add('gw-c');
  assert.is(await next, 'gw-c');
});

test('failures back off exponentially up to the cap, and forget resets the backoff', () => {
  const timers = fakeTimers();
  const q = new WorkQueue<string>({ baseDelayMs: 10, maxDelayMs: 50, timers });
  const delays = [1, 2, 3, 4, 5].map(() => {
    const d = q.addRateLimited('gw-a');
    timers.advance(d);
    return d;
  });
  assert.equal(delays, [10, 20, 40, 50, 50]);
  assert.is(q.length, 1, 'the retries collapsed into one queued key');
  q.forget('gw-a');
  assert.is(q.addRateLimited('gw-a'), 10);
});

test('shutdown releases waiting workers', async () => {
  const q = new WorkQueue<string>();
  const next = q.get();
  q.shutdown();
  assert.is(await next, undefined);
});

test('metrics render in Prometheus text format with sorted, escaped labels and pre-initialised zeros', () => {
  const r = new Registry();
  const c = r.register(new Counter('raven_reconcile_errors_total', 'Reconcile errors by phase.'));
  c.init({ phase: 'status' });
  c.inc({ phase: 'election' }, 2);
  const h = r.register(new Histogram('raven_decision_seconds', 'Decision latency.', [0.1, 0.5]));
  h.observe(0.2);
  assert.is(
    r.render(),
    [
      '# HELP raven_reconcile_errors_total Reconcile errors by phase.',
      '# TYPE raven_reconcile_errors_total counter',
      'raven_reconcile_errors_total{phase="election"} 2',
      'raven_reconcile_errors_total{phase="status"} 0',
      '# HELP raven_decision_seconds Decision latency.',
      '# TYPE raven_decision_seconds histogram',
      'raven_decision_seconds_bucket{le="0.1"} 0',
      'raven_decision_seconds_bucket{le="0.5"} 1',
      'raven_decision_seconds_bucket{le="+Inf"} 1',
      'raven_decision_seconds_sum 0.2',
      'raven_decision_seconds_count 1',
      '',
    ].join('\n'),
  );
});

test.run();
