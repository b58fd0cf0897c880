/**
 * A keyed work queue in the controller-runtime mould: a key is queued at most once; a key added
 * while it is being processed is processed again afterwards (never concurrently); failures retry
 * with exponential backoff per key; `forget` resets the backoff after a success.
 */

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface WorkQueueOptions {
  /** First retry delay after a failure. */
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  readonly timers?: Timers;
}

export class WorkQueue<K> {
  private readonly queue: K[] = [];
  private readonly queued = new Set<K>();
  private readonly processing = new Set<K>();
  private readonly dirty = new Set<K>();
  private readonly failures = new Map<K, number>();
  private readonly delayed = new Map<K, unknown>();
  private readonly waiters: ((k: K | undefined) => void)[] = [];
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly timers: Timers;
  private closed = false;

  constructor(opts: WorkQueueOptions = {}) {
    this.baseDelayMs = opts.baseDelayMs ?? 10;
    this.maxDelayMs = opts.maxDelayMs ?? 30_000;
    this.timers = opts.timers ?? { setTimeout: (fn, ms) => setTimeout(fn, ms), clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout) };
  }

  get length(): number {
    return this.queue.length;
  }

  add(key: K): void {
    if (this.closed) return;
    const timer = this.delayed.get(key);
    if (timer !== undefined) {
      this.timers.clearTimeout(timer);
      this.delayed.delete(key);
    }
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      this.processing.add(key);
      waiter(key);
      return;
    }
    this.queued.add(key);
    this.queue.push(key);
  }

  /** Adds `key` after `ms`, unless it is added sooner. */
  addAfter(key: K, ms: number): void {
    if (this.closed || this.delayed.has(key)) return;
    this.delayed.set(
      key,
      this.timers.setTimeout(() => {
        this.delayed.delete(key);
        this.add(key);
      }, ms),
    );
  }

  /** Retries `key` after its backoff: base × 2^(failures so far), capped. Returns the delay. */
  addRateLimited(key: K): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const delay = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** n);
    this.addAfter(key, delay);
    return delay;
  }

  forget(key: K): void {
    this.failures.delete(key);
  }

  retries(key: K): number {
    return this.failures.get(key) ?? 0;
  }

  /** The next key to process, or undefined once shut down. Call `done(key)` when finished. */
  get(): Promise<K | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    const key = this.queue.shift();
    if (key !== undefined) {
      this.queued.delete(key);
      this.processing.add(key);
      return Promise.resolve(key);
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  done(key: K): void {
    this.processing.delete(key);
    if (this.dirty.delete(key)) this.add(key);
  }

  shutdown(): void {
    this.closed = true;
    for (const t of this.delayed.values()) this.timers.clearTimeout(t);
    this.delayed.clear();
    for (const w of this.waiters.splice(0)) w(undefined);
  }
}
