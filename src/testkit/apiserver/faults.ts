/**
 * Fault injection for tests: fail requests matching a method/path with a status code, add latency,
 * drop watch connections, compact history. A typed API on the server object, not an HTTP endpoint.
 */

export interface RequestMatch {
  /** HTTP method (case-insensitive); omitted: any. */
  method?: string;
  /** A string matches the URL path exactly or as a prefix ending at a `/`; a RegExp is tested against `path?query`. */
  path?: string | RegExp;
  /** true: only watch requests; false: only non-watch requests; omitted: both. */
  watch?: boolean;
}

export interface FailRule extends RequestMatch {
  /** How many matching requests fail (default 1). */
  count?: number;
  /** HTTP status (default 500); the Status reason follows the code (500 InternalError, 503 ServiceUnavailable, 429 TooManyRequests, ...). */
  status?: number;
  message?: string;
  /** Retry-After seconds sent with 429/503. */
  retryAfterSeconds?: number;
}

export interface FailHandle {
  /** Matching requests still to fail. */
  readonly remaining: number;
  /** Requests this rule has failed so far. */
  readonly hits: number;
  cancel(): void;
}

export interface LatencyRule extends RequestMatch {
  ms: number;
}

export interface RequestInfo {
  method: string;
  path: string;
  query: string;
  watch: boolean;
}

export interface Faults {
  /** Fail the next `count` requests matching the rule. Rules are checked in the order they were added. */
  failNext(rule?: FailRule): FailHandle;
  /** Delay every matching request by `ms` before it is handled (watches: before the stream opens). Replaces earlier latency rules with the same match; ms 0 removes. */
  setLatency(ms: number, match?: RequestMatch): void;
  /** Closes all open watches. 'reset' (default) destroys their sockets, like a crashed server or a broken network; 'end' finishes the streams cleanly, like a server-side watch timeout. Returns how many were closed. */
  dropWatches(mode?: 'reset' | 'end'): number;
  /** Advances the resourceVersion (as an unrelated write would) and compacts the history up to it: a watch, Exact list or continue from any resourceVersion handed out before gets 410 Expired, so every resuming watcher relists. Returns the compaction resourceVersion. */
  compact(): string;
  /** Removes all fail and latency rules. */
  clear(): void;
}

export function matches(m: RequestMatch, r: RequestInfo): boolean {
  if (m.method && m.method.toUpperCase() !== r.method.toUpperCase()) return false;
  if (m.watch !== undefined && m.watch !== r.watch) return false;
  if (m.path !== undefined) {
    if (typeof m.path === 'string') {
      const p = m.path.replace(/\/$/, '');
      if (r.path !== p && !r.path.startsWith(p + '/')) return false;
    } else if (!m.path.test(r.query ? `${r.path}?${r.query}` : r.path)) return false;
  }
  return true;
}

interface ActiveRule {
  rule: FailRule;
  remaining: number;
  hits: number;
}

export class FaultInjector implements Faults {
  private rules: ActiveRule[] = [];
  private latency: LatencyRule[] = [];

  constructor(private readonly hooks: { dropWatches(mode: 'reset' | 'end'): number; compact(): string }) {}

  failNext(rule: FailRule = {}): FailHandle {
    const active: ActiveRule = { rule, remaining: rule.count ?? 1, hits: 0 };
    this.rules.push(active);
    const self = this;
    return {
      get remaining() {
        return active.remaining;
      },
      get hits() {
        return active.hits;
      },
      cancel() {
        self.rules = self.rules.filter((r) => r !== active);
      },
    };
  }

  setLatency(ms: number, match: RequestMatch = {}): void {
    const same = (l: LatencyRule): boolean => l.method === match.method && String(l.path) === String(match.path) && l.watch === match.watch;
    this.latency = this.latency.filter((l) => !same(l));
    if (ms > 0) this.latency.push({ ...match, ms });
  }

  dropWatches(mode: 'reset' | 'end' = 'reset'): number {
    return this.hooks.dropWatches(mode);
  }

  compact(): string {
    return this.hooks.compact();
  }

  clear(): void {
    this.rules = [];
    this.latency = [];
  }

  /** The failure for this request, if a rule wants one (consumes one of its count). */
  take(r: RequestInfo): FailRule | undefined {
    for (const active of this.rules) {
      if (active.remaining <= 0 || !matches(active.rule, r)) continue;
      active.remaining--;
      active.hits++;
      if (active.remaining <= 0) this.rules = this.rules.filter((x) => x !== active);
      return active.rule;
    }
    return undefined;
  }

  delayFor(r: RequestInfo): number {
    return this.latency.filter((l) => matches(l, r)).reduce((sum, l) => sum + l.ms, 0);
  }
}
