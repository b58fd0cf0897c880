/**
 * Values refused at a trust boundary, as operators see them: a gauge of how many are refused now,
 * by kind, and one warning per refusal when it first appears (a hostile value must not flood the
 * log on every sync). Refusals are kept per scope (a Gateway, or a whole plan) and replaced each
 * time that scope is evaluated again.
 */
import { countByKind, type Dropped, sortDropped } from './canonical.js';
import type { Gauge } from './metrics.js';

const key = (d: Dropped): string => `${d.source}\0${d.kind}\0${d.reason}`;

export class Refusals {
  private readonly byScope = new Map<string, readonly Dropped[]>();

  /** `kinds` are pre-initialised at 0, so dashboards see zeros instead of gaps. */
  constructor(
    private readonly gauge: Gauge,
    private readonly kinds: readonly string[],
    private readonly warn: (d: Dropped, scope: string) => void,
  ) {
    for (const kind of kinds) gauge.set(0, { kind });
  }

  /** The refusals of `scope` are now exactly `items`. */
  set(scope: string, items: readonly Dropped[]): void {
    const before = new Set((this.byScope.get(scope) ?? []).map(key));
    const all = sortDropped(items);
    for (const d of all) if (!before.has(key(d))) this.warn(d, scope);
    if (all.length) this.byScope.set(scope, all);
    else this.byScope.delete(scope);
    const counts = countByKind([...this.byScope.values()].flat());
    for (const kind of new Set([...this.kinds, ...counts.keys()])) this.gauge.set(counts.get(kind) ?? 0, { kind });
  }
}
