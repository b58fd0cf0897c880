/**
 * The agent's routes, in a routing table and behind a rule priority that are ours alone.
 * `set(desired)` reads what the kernel has (`ip -json`), computes the difference and applies it in
 * one `ip -batch` exec: nothing is touched when nothing differs, and a thousand routes cost one
 * process. `cleanUp()` removes exactly our table's routes and our rules.
 */
import ipaddr from 'ipaddr.js';
import { canonicalIP } from '../../platform/canonical.js';
import { type CommandRunner, mustRun } from '../../platform/command-runner.js';
import type { RoutePlan } from '../plan.js';
import { attempt, failure } from './errors.js';

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
  /** Desired routes that are not well-formed (not a CIDR, next hop not an address, bad device or MTU): never written. */
  readonly refused: { readonly route: RoutePlan; readonly reason: string }[];
}

/** Interface names as the kernel allows them (IFNAMSIZ 16 with the NUL), in the characters we use. */
const DEVICE = /^[A-Za-z0-9_.-]{1,15}$/;

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
      if (res.code !== 0) throw new Error(`failed to read routing table ${this.opts.table} (${family === '-4' ? 'IPv4' : 'IPv6'}): ${res.stderr.trim()}`);
      for (const r of JSON.parse(res.stdout || '[]') as KernelRoute[]) {
        const mtu = r.metrics?.find((m) => m.mtu !== undefined)?.mtu;
        // `ip` prints a default route as "default"; anything else odd is kept as it says, and removed.
        const dst = r.dst === 'default' ? (family === '-4' ? '0.0.0.0/0' : '::/0') : r.dst;
        out.push({ dst: normalizeCidr(dst) ?? dst, ...(r.gateway ? { via: r.gateway } : { dev: r.dev! }), mtu: mtu ?? 0 });
      }
    }
    return out.sort((a, b) => (a.dst < b.dst ? -1 : 1));
  }

  /**
   * Makes our table exactly the well-formed routes of `desired`. Every line of the batch is rendered
   * from parsed values (`renderRoute`); a route that does not parse is refused and reported, never
   * written, and the others are still applied. Reads the kernel each time (no cache), so a route or
   * rule someone else removed is put back by the next call with the same input.
   */
  async set(desired: readonly RoutePlan[]): Promise<RouteDiff & { ruleAdded: boolean; rulesAdded: string[] }> {
    const wellFormed = desired.filter((r) => routeProblem(r) === null);
    const rulesAdded = await this.ensureRules(wellFormed);
    const diff = diffRoutes(await this.current(), desired);
    const table = this.opts.table;
    // Each batch line with what it does, so a failure names the route (`ip -batch` says which line).
    const steps = [
      ...diff.remove.flatMap((dst) => {
        const canonical = normalizeCidr(dst);
        // A kernel route we cannot even name (it cannot be ours) is flushed by cleanUp, not here.
        return canonical ? [{ line: `route del ${canonical} table ${table}`, what: `remove route ${canonical} from table ${table}` }] : [];
      }),
      ...diff.add.map((r) => ({ line: renderRoute(r, table), what: `add route ${describeRoute(r)} to table ${table}` })),
      ...diff.change.map((r) => ({ line: renderRoute(r, table), what: `change route ${describeRoute(r)} in table ${table}` })),
    ];
    if (steps.length) {
      const r = await this.runner.run('ip', this.ip(['-batch', '-']), steps.map((x) => x.line).join('\n') + '\n');
      if (r.code !== 0) {
        const line = Number(/Command failed -:(\d+)/.exec(r.stderr)?.[1]);
        const why = r.stderr.trim().split('\n')[0] || `ip exited ${r.code}`;
        const what = steps[line - 1]?.what ?? `write ${steps.length} route changes to table ${table}`;
        throw failure(what, new Error(why));
      }
    }
    return { ...diff, ruleAdded: rulesAdded.length > 0, rulesAdded };
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

  /**
   * Our rule exactly in the families that have routes: a node with nothing to route keeps no rule of
   * ours. Returns the families (`-4`, `-6`) whose rule was missing and was added.
   */
  private async ensureRules(desired: readonly RoutePlan[]): Promise<string[]> {
    const added: string[] = [];
    const families = new Set<string>(desired.map((r) => (r.dst.includes(':') ? '-6' : '-4')));
    for (const family of ['-4', '-6']) {
      const name = family === '-4' ? 'IPv4' : 'IPv6';
      const rules = JSON.parse((await attempt(`read the ${name} rules`, () => mustRun(this.runner, 'ip', this.ip([family, '-json', 'rule', 'show'])))) || '[]') as { priority?: number; table?: string }[];
      const ours = rules.filter((r) => r.priority === this.opts.priority && r.table === String(this.opts.table)).length;
      const rule = ['pref', String(this.opts.priority), 'lookup', String(this.opts.table)];
      const text = `${name} rule ${rule.join(' ')}`;
      if (families.has(family) && ours === 0) {
        await attempt(`add ${text}`, () => mustRun(this.runner, 'ip', this.ip([family, 'rule', 'add', ...rule])));
        added.push(family);
      }
      // Duplicates (a crash between add and record cannot make them, but another tool could) go too.
      const extra = families.has(family) ? ours - 1 : ours;
      for (let i = 0; i < extra; i++) await attempt(`remove ${text}`, () => mustRun(this.runner, 'ip', this.ip([family, 'rule', 'del', ...rule])));
    }
    return added;
  }
}

/** `10.1.0.0/16 via 192.168.1.1` or `10.1.0.0/16 dev raven0`, for messages. */
export function describeRoute(r: RoutePlan): string {
  return `${normalizeCidr(r.dst) ?? r.dst} ${r.via !== undefined ? `via ${r.via}` : `dev ${r.dev}`}`;
}

/**
 * Why a route may not be written, or null: the destination must be a CIDR, the next hop an address
 * of the same family (or the device a plain interface name), the MTU an integer. These values come
 * from Gateway status, so this is the last check before a line of `ip -batch` input.
 */
export function routeProblem(r: RoutePlan): string | null {
  const dst = normalizeCidr(r.dst);
  if (!dst) return `destination ${JSON.stringify(r.dst)} is not a CIDR`;
  const v6 = dst.includes(':');
  if (r.via !== undefined) {
    const via = canonicalIP(r.via);
    if (!via.ok || via.value !== r.via || r.via.includes(':') !== v6) return `next hop ${JSON.stringify(r.via)} is not an ${v6 ? 'IPv6' : 'IPv4'} address`;
  } else if (r.dev === undefined || !DEVICE.test(r.dev)) return `device ${JSON.stringify(r.dev)} is not an interface name`;
  if (!Number.isInteger(r.mtu) || r.mtu < 0 || r.mtu > 65535 || (r.mtu > 0 && r.mtu < 68)) return `MTU ${JSON.stringify(r.mtu)} is not valid`;
  return null;
}

/** One `ip -batch` line, from parsed values only. Callers check `routeProblem` first. */
export function renderRoute(r: RoutePlan, table: number): string {
  const problem = routeProblem(r);
  if (problem) throw new Error(`refusing to render route: ${problem}`);
  const next = r.via !== undefined ? `via ${r.via}` : `dev ${r.dev}`;
  // onlink on dev routes is unnecessary; mtu lock stops PMTU discovery from raising it above the tunnel's.
  return `route replace ${normalizeCidr(r.dst)} ${next} table ${table}${r.mtu ? ` mtu lock ${r.mtu}` : ''}`;
}

/** What must change to turn `current` into `desired`. Pure. Malformed desired routes are refused, not diffed. */
export function diffRoutes(current: readonly RoutePlan[], desired: readonly RoutePlan[]): RouteDiff {
  const refused: { route: RoutePlan; reason: string }[] = [];
  const have = new Map(current.map((r) => [normalizeCidr(r.dst) ?? r.dst, r]));
  const want = new Map<string, RoutePlan>();
  for (const r of desired) {
    const reason = routeProblem(r);
    if (reason) refused.push({ route: r, reason });
    else want.set(normalizeCidr(r.dst)!, { ...r, dst: normalizeCidr(r.dst)! });
  }
  const add: RoutePlan[] = [];
  const change: RoutePlan[] = [];
  for (const [dst, r] of want) {
    const h = have.get(dst);
    if (!h) add.push(r);
    else if ((r.via ?? '') !== (h.via ?? '') || (!r.via && r.dev !== h.dev) || (r.mtu || 0) !== (h.mtu || 0)) change.push(r);
  }
  const remove = [...have.keys()].filter((dst) => !want.has(dst)).sort();
  const byDst = (a: RoutePlan, b: RoutePlan): number => (a.dst < b.dst ? -1 : 1);
  return { add: add.sort(byDst), change: change.sort(byDst), remove, refused };
}

/**
 * `10.0.0.10` → `10.0.0.10/32`; IPv6 in canonical compressed form, as `ip` prints it; undefined
 * for anything that is not exactly an address with an optional prefix length (no spaces, no
 * newlines: this text becomes part of a batch line).
 */
export function normalizeCidr(text: string): string | undefined {
  if (typeof text !== 'string' || !/^[0-9a-fA-F.:]+(\/\d{1,3})?$/.test(text)) return undefined;
  const withLen = text.includes('/') ? text : `${text}/${text.includes(':') ? 128 : 32}`;
  try {
    const [addr, len] = ipaddr.parseCIDR(withLen);
    return `${addr.toString()}/${len}`;
  } catch {
    return undefined;
  }
}
