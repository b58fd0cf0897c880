/**
 * Timers for processes that run for months: each loop owns one named slot, so however many ticks
 * run, the pending timers are bounded by the number of names. Time is a parameter (a `Clock`), so
 * tests drive it by hand and count what is armed.
 */

/** Where timers come from. `systemClock` in production; a fake in tests. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = Object.freeze({
  now: (): number => Date.now(),
  setTimeout: (fn: () => void, ms: number): unknown => setTimeout(fn, ms),
  clearTimeout: (handle: unknown): void => clearTimeout(handle as NodeJS.Timeout),
});

/** At most one pending timer per name; `stop()` clears them all and refuses new ones. */
export class Timers {
  private readonly pending = new Map<string, unknown>();
  private stopped = false;

  constructor(private readonly clock: Clock = systemClock) {}

  /** Runs `fn` once after `ms` (at least 0), replacing a pending timer of the same name. Nothing after `stop()`. */
  set(name: string, ms: number, fn: () => void): void {
    if (this.stopped) return;
    this.cancel(name);
    const handle = this.clock.setTimeout(() => {
      if (this.pending.get(name) === handle) this.pending.delete(name);
      fn();
    }, Math.max(0, ms));
    this.pending.set(name, handle);
  }

  /** Like `set`, but keeps a pending timer of that name (the earlier one wins). */
  setIfIdle(name: string, ms: number, fn: () => void): void {
    if (!this.pending.has(name)) this.set(name, ms, fn);
  }

  has(name: string): boolean {
    return this.pending.has(name);
  }

  cancel(name: string): void {
    const handle = this.pending.get(name);
    if (handle === undefined) return;
    this.clock.clearTimeout(handle);
    this.pending.delete(name);
  }

  /** Timers armed and not yet run. */
  get size(): number {
    return this.pending.size;
  }

  stop(): void {
    this.stopped = true;
    for (const name of [...this.pending.keys()]) this.cancel(name);
  }
}

/**
 * Sorted due times, pairwise at least `spacingMs` apart: a time that close to one already pending
 * is served by that one and dropped. Within any window of W ms it holds at most W / spacingMs + 1.
 */
export class DueTimes {
  private due: number[] = [];

  constructor(private readonly spacingMs: number) {}

  add(at: number): void {
    if (this.due.some((t) => Math.abs(t - at) < this.spacingMs)) return;
    const i = this.due.findIndex((t) => t > at);
    if (i < 0) this.due.push(at);
    else this.due.splice(i, 0, at);
  }

  /** The earliest pending time. */
  next(): number | undefined {
    return this.due[0];
  }

  /** Removes every time up to and including `now`; returns how many there were. */
  takeUntil(now: number): number {
    const keep = this.due.filter((t) => t > now);
    const taken = this.due.length - keep.length;
    this.due = keep;
    return taken;
  }

  get size(): number {
    return this.due.length;
  }
}

/**
 * Deterministic exponential backoff: `next()` returns `initialMs`, then twice the last delay, up to
 * `maxMs`; `reset()` starts over. No jitter: a node's retries are its own, and tests read the delays.
 */
export class Backoff {
  private delay: number | undefined;

  constructor(private readonly initialMs: number, private readonly maxMs: number) {
    if (!(initialMs > 0 && maxMs >= initialMs)) throw new Error(`backoff needs 0 < initial <= max, got ${initialMs} and ${maxMs}`);
  }

  /** The delay before the next attempt; each call doubles the one after it. */
  next(): number {
    this.delay = this.delay === undefined ? this.initialMs : Math.min(this.delay * 2, this.maxMs);
    return this.delay;
  }

  /** After a success: the next failure waits `initialMs` again. */
  reset(): void {
    this.delay = undefined;
  }
}
