/**
 * Probe bookkeeping, pure: a window of recent results per target, giving loss and the latest RTT,
 * and a round-robin choice of whom to probe next so a gateway with a thousand peers sends a bounded
 * number of probes per round.
 */

export const PROBE_WINDOW = 10;

export interface ProbeResult {
  readonly ok: boolean;
  readonly rttMs?: number;
  /** When the probe was sent (milliseconds, the agent's clock). */
  readonly at: number;
}

export interface ProbeStats {
  /** The node the window's probes went to. */
  readonly node: string;
  readonly loss: number;
  readonly rttMs?: number;
  readonly samples: number;
  /** Probes unanswered in a row, up to the latest. */
  readonly lostProbes: number;
  /** Probes answered in a row, up to the latest. */
  readonly answeredProbes: number;
  /** When the first of those was sent (absent when the latest was answered). */
  readonly lostSince?: number;
}

/**
 * A window per target (a remote gateway), for one node at a time: when the target's active node
 * changes, what was learned of the old one is forgotten, so a failover starts with a clean record.
 */
export class ProbeWindow {
  private readonly results = new Map<string, { node: string; list: ProbeResult[] }>();

  record(target: string, node: string, r: ProbeResult): void {
    let entry = this.results.get(target);
    if (!entry || entry.node !== node) this.results.set(target, (entry = { node, list: [] }));
    entry.list.push(r);
    if (entry.list.length > PROBE_WINDOW) entry.list.shift();
  }

  /** Forgets targets not in `keep` (peers that left the plan). */
  retain(keep: ReadonlySet<string>): void {
    for (const t of [...this.results.keys()]) if (!keep.has(t)) this.results.delete(t);
  }

  /** Loss over the window (0..1), the latest successful RTT in it and the current run of losses. */
  stats(target: string): ProbeStats | undefined {
    const entry = this.results.get(target);
    if (!entry?.list.length) return undefined;
    const { node, list } = entry;
    const lost = list.filter((r) => !r.ok).length;
    const rtt = [...list].reverse().find((r) => r.ok && r.rttMs !== undefined)?.rttMs;
    const runOf = (ok: boolean): number => {
      let n = 0;
      while (n < list.length && list[list.length - 1 - n]!.ok === ok) n++;
      return n;
    };
    const run = runOf(false);
    return {
      node,
      loss: lost / list.length,
      ...(rtt !== undefined && { rttMs: rtt }),
      samples: list.length,
      lostProbes: run,
      answeredProbes: runOf(true),
      ...(run > 0 && { lostSince: list[list.length - run]!.at }),
    };
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
