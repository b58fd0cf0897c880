/**
 * Probe bookkeeping, pure: a window of recent results per target, giving loss and the latest RTT,
 * and a round-robin choice of whom to probe next so a gateway with a thousand peers sends a bounded
 * number of probes per round.
 */

export const PROBE_WINDOW = 10;

export interface ProbeResult {
  readonly ok: boolean;
  readonly rttMs?: number;
}

export class ProbeWindow {
  private readonly results = new Map<string, ProbeResult[]>();

  record(target: string, r: ProbeResult): void {
    const list = this.results.get(target) ?? [];
    list.push(r);
    if (list.length > PROBE_WINDOW) list.shift();
    this.results.set(target, list);
  }

  /** Forgets targets not in `keep` (peers that left the plan). */
  retain(keep: ReadonlySet<string>): void {
    for (const t of [...this.results.keys()]) if (!keep.has(t)) this.results.delete(t);
  }

  /** Loss over the window (0..1) and the latest successful RTT in it. */
  stats(target: string): { loss: number; rttMs?: number; samples: number } | undefined {
    const list = this.results.get(target);
    if (!list?.length) return undefined;
    const lost = list.filter((r) => !r.ok).length;
    const rtt = [...list].reverse().find((r) => r.ok && r.rttMs !== undefined)?.rttMs;
    return { loss: lost / list.length, ...(rtt !== undefined && { rttMs: rtt }), samples: list.length };
  }

  targets(): string[] {
    return [...this.results.keys()].sort();
  }
}

/** The next `n` of `items` after position `cursor` (wrapping); returns them and the new cursor. */
export function roundRobin<T>(items: readonly T[], cursor: number, n: number): { batch: T[]; cursor: number } {
  if (items.length === 0) return { batch: [], cursor: 0 };
  const take = Math.min(n, items.length);
  const start = cursor % items.length;
  const batch = Array.from({ length: take }, (_, i) => items[(start + i) % items.length]!);
  return { batch, cursor: (start + take) % items.length };
}

/** RTT from ping's output (`time=0.123 ms`), in milliseconds. */
export function parsePingRtt(stdout: string): number | undefined {
  const m = /time[=<]([\d.]+) ?ms/.exec(stdout);
  return m ? Number(m[1]) : undefined;
}
