/** A clock driven by hand: `advance` runs due timers in time order and lets their promises settle. */
import type { Clock } from '../../src/platform/timers.ts';

export class FakeClock implements Clock {
  private t = 0;
  private nextId = 0;
  private readonly queue = new Map<number, { at: number; fn: () => void }>();
  /** Timers run so far. */
  fired = 0;

  constructor(private readonly settle: () => Promise<void> = () => new Promise((r) => setImmediate(r))) {}

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.nextId;
    this.queue.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.queue.delete(handle as number);
  }

  /** Timers armed and not yet run or cleared. */
  get armed(): number {
    return this.queue.size;
  }

  /** Moves time forward by `ms`, running each timer due on the way (earliest first, then in arming order). */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      let due: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.queue) if (entry[1].at <= end && (!due || entry[1].at < due[1].at)) due = entry;
      if (!due) break;
      this.queue.delete(due[0]);
      this.t = due[1].at;
      this.fired++;
      due[1].fn();
      await this.settle();
    }
    this.t = end;
    await this.settle();
  }
}
