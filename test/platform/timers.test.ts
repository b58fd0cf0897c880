/** The runtime's timers: one pending per name however often a loop re-arms; nudge times stay bounded. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Backoff, DueTimes, Timers } from '../../src/platform/timers.ts';
import { FakeClock } from '../support/fake-clock.ts';

test('a loop that re-arms its own name a thousand times keeps one timer armed, and runs every tick', async () => {
  const clock = new FakeClock();
  const timers = new Timers(clock);
  let ticks = 0;
  const tick = (): void => {
    ticks++;
    timers.set('loop', 250, tick);
  };
  tick();
  for (let i = 0; i < 1000; i++) {
    await clock.advance(250);
    assert.is(timers.size, 1);
    assert.is(clock.armed, 1);
  }
  assert.is(ticks, 1001);
});

test('set replaces a pending timer of the same name; setIfIdle keeps it; names are independent', async () => {
  const clock = new FakeClock();
  const timers = new Timers(clock);
  const ran: string[] = [];
  timers.set('a', 100, () => ran.push('a@100'));
  timers.set('a', 300, () => ran.push('a@300'));
  timers.setIfIdle('b', 200, () => ran.push('b@200'));
  timers.setIfIdle('b', 50, () => ran.push('b@50'));
  assert.is(timers.size, 2);
  assert.is(clock.armed, 2);
  await clock.advance(1000);
  assert.equal(ran, ['b@200', 'a@300']);
  assert.is(timers.size, 0);
  assert.is(clock.armed, 0);
});

test('stop clears every pending timer, and nothing is armed after it', async () => {
  const clock = new FakeClock();
  const timers = new Timers(clock);
  let ran = 0;
  for (const name of ['heartbeat', 'probe', 'retry']) timers.set(name, 10, () => ran++);
  timers.stop();
  timers.set('late', 10, () => ran++);
  assert.is(timers.size, 0);
  assert.is(clock.armed, 0);
  await clock.advance(100);
  assert.is(ran, 0);
});

test('due times closer than the spacing are one, so a burst of changes leaves a bounded set', () => {
  const due = new DueTimes(100);
  for (const d of [150, 400, 800, 1500, 2500]) due.add(d);
  assert.is(due.size, 5);
  // A change every 10 ms for 10 s would have armed 5,000 nudges; pending ones stay within 2.5 s.
  let most = 0;
  for (let now = 0; now < 10_000; now += 10) {
    due.takeUntil(now);
    for (const d of [150, 400, 800, 1500, 2500]) due.add(now + d);
    most = Math.max(most, due.size);
  }
  assert.ok(most <= 2500 / 100 + 1, `${most} due times pending`);
  const pending = due.size;
  assert.is(due.takeUntil(Number.MAX_SAFE_INTEGER), pending);
  assert.is(due.size, 0);
});

test('due times come out in order, each once', () => {
  const due = new DueTimes(100);
  for (const t of [800, 150, 2500, 400, 1500, 420]) due.add(t);
  const out: number[] = [];
  for (let t = due.next(); t !== undefined; t = due.next()) {
    out.push(t);
    due.takeUntil(t);
  }
  assert.equal(out, [150, 400, 800, 1500, 2500]);
});

test('backoff doubles from its first delay to its cap, stays there, and starts over after a reset', () => {
  const b = new Backoff(1000, 30_000);
  assert.equal(Array.from({ length: 8 }, () => b.next()), [1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
  b.reset();
  assert.equal([b.next(), b.next()], [1000, 2000]);
  assert.throws(() => new Backoff(0, 10), /0 < initial <= max/);
  assert.throws(() => new Backoff(20, 10), /0 < initial <= max/);
});

test.run();
