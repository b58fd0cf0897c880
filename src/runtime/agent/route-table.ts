/**
 * The agent's routes, in a routing table and behind a rule priority that are ours alone.
 * `set(desired)` reads what the kernel has (`ip -json`), computes the difference and applies it in
 * one `ip -batch` exec: nothing is touched when nothing differs, and a thousand routes cost one
 * process. `cleanUp()` removes exactly our table's routes and our rules.
 */
import ipaddr from 'ipaddr.js';
import { type CommandRunner, mustRun } from './command-runner.js';
import type { RoutePlan } from './plan.js';

export interface RouteTableOptions {
  /** Routing table id, ours alone (default 9031; Raven uses 9027/9028, so both can coexist). */
  readonly table: number;
  /** Priority of our `lookup <table>` rule, before `main` (32766). */
  readonly priority: number;
  /** Run inside this network namespace (`ip -n`), for the lab and tests. */
  readonly netns?: string;
}

export const DEFAULT_ROUTE_TABLE: RouteTableOptions = { table: 9031, priority: 9031 };

export interface RouteDiff {
  readonly add: RoutePlan[];
  readonly change: RoutePlan[];
  readonly remove: string[];
}

interface KernelRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  metrics?: { mtu?: number }[];
}

export class RouteTable {
  constructor(private readonly runner: CommandRunner, private readonly opts: RouteTableOptions = DEFAULT_ROUTE_TABLE) {}

  private ip(args: readonly string[]): readonly string[] {
    return this.opts.netns ? ['-n', this.opts.netns, ...args] : args;
  }

  /** The routes now in our table, normalised like plans are. */
  async current(): Promise<RoutePlan[]> {
    const out: RoutePlan[] = [];
    for (const family of ['-4', '-6']) {
      const res = await this.runner.run('ip', this.ip([family, '-json', 'route', 'show', 'table', String(this.opts.table)]));
      // A table with no routes does not exist as far as the kernel is concerned: that is "empty".
      if (res.code !== 0 && /table does not exist/i.test(res.stderr)) continue;
      if (res.code !== 0) throw new Error(`failed to read routing table ${this.opts.table}: ${res.stderr.trim()}`);
      for (const r of JSON.parse(res.stdout || '[]') as KernelRoute[]) {
        const mtu = r.metrics?.find((m) => m.mtu !== undefined)?.mtu;
        out.push({ dst: normalizeCidr(r.dst), ...(r.gateway ? { via: r.gateway } : { dev: r.dev! }), mtu: mtu ?? 0 });
      }
    }
    return out.sort((a, b) => (a.dst < b.dst ? -1 : 1));
  }

  async set(desired: readonly RoutePlan[]): Promise<RouteDiff & { ruleAdded: boolean }> {
    const ruleAdded = await this.ensureRules(desired);
    const diff = diffRoutes(await this.current(), desired);
    const lines = [
      ...diff.remove.map((dst) => `route del ${dst} table ${this.opts.table}`),
      ...[...diff.add, ...diff.change].map((r) => this.replaceLine(r)),
    ];
    if (lines.length) await mustRun(this.runner, 'ip', this.ip(['-batch', '-']), lines.join('\n') + '\n');
    return { ...diff, ruleAdded };
  }

  /** Removes every route in our table and our rules; leaves everything else alone. */
  async cleanUp(): Promise<void> {
    for (const family of ['-4', '-6']) {
      await this.runner.run('ip', this.ip([family, 'route', 'flush', 'table', String(this.opts.table)]));
      // One rule per family; delete until none is left (a crash may have left duplicates).
      for (let i = 0; i < 8; i++) {
        const r = await this.runner.run('ip', this.ip([family, 'rule', 'del', 'pref', String(this.opts.priority), 'lookup', String(this.opts.table)]));
        if (r.code !== 0) break;
      }
    }
  }

  private replaceLine(r: RoutePlan): string {
    const dst = normalizeCidr(r.dst);
    const next = r.via ? `via ${r.via}` : `dev ${r.dev}`;
    // onlink on dev routes is unnecessary; mtu lock stops PMTU discovery from raising it above the tunnel's.
    return `route replace ${dst} ${next} table ${this.opts.table}${r.mtu ? ` mtu lock ${r.mtu}` : ''}`;
  }

  /** Our rule exactly in the families that have routes: a node with nothing to route keeps no rule of ours. */
  private async ensureRules(desired: readonly RoutePlan[]): Promise<boolean> {
    let added = false;
    const families = new Set<string>(desired.map((r) => (r.dst.includes(':') ? '-6' : '-4')));
    for (const family of ['-4', '-6']) {
      const rules = JSON.parse((await mustRun(this.runner, 'ip', this.ip([family, '-json', 'rule', 'show']))) || '[]') as { priority?: number; table?: string }[];
      const ours = rules.filter((r) => r.priority === this.opts.priority && r.table === String(this.opts.table)).length;
      const rule = ['pref', String(this.opts.priority), 'lookup', String(this.opts.table)];
      if (families.has(family) && ours === 0) {
        await mustRun(this.runner, 'ip', this.ip([family, 'rule', 'add', ...rule]));
        added = true;
      }
      // Duplicates (a crash between add and record cannot make them, but another tool could) go too.
      const extra = families.has(family) ? ours - 1 : ours;
      for (let i = 0; i < extra; i++) await mustRun(this.runner, 'ip', this.ip([family, 'rule', 'del', ...rule]));
    }
    return added;
  }
}

/** What must change to turn `current` into `desired`. Pure. */
export function diffRoutes(current: readonly RoutePlan[], desired: readonly RoutePlan[]): RouteDiff {
  const have = new Map(current.map((r) => [normalizeCidr(r.dst), r]));
  const want = new Map(desired.map((r) => [normalizeCidr(r.dst), { ...r, dst: normalizeCidr(r.dst) }]));
  const add: RoutePlan[] = [];
  const change: RoutePlan[] = [];
  for (const [dst, r] of want) {
    const h = have.get(dst);
    if (!h) add.push(r);
    else if ((r.via ?? '') !== (h.via ?? '') || (!r.via && r.dev !== h.dev) || (r.mtu || 0) !== (h.mtu || 0)) change.push(r);
  }
  const remove = [...have.keys()].filter((dst) => !want.has(dst)).sort();
  const byDst = (a: RoutePlan, b: RoutePlan): number => (a.dst < b.dst ? -1 : 1);
  return { add: add.sort(byDst), change: change.sort(byDst), remove };
}

/** `10.0.0.10` → `10.0.0.10/32`; IPv6 in canonical compressed form, as `ip` prints it. */
export function normalizeCidr(text: string): string {
  const withLen = text.includes('/') ? text : `${text}/${text.includes(':') ? 128 : 32}`;
  try {
    const [addr, len] = ipaddr.parseCIDR(withLen);
    return `${addr.toString()}/${len}`;
  } catch {
    return withLen;
  }
}
