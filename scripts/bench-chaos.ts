/**
 * Chaos soak on `raven lab` (test/fixtures/lab/seed-ha-<backend>.yaml, WAN delay on): random
 * faults on the active gateways for `--minutes` (default 30), each 20–60 s after the last began,
 * restored after 5–30 s, one at a time; meanwhile pods ping across every pair of regions every
 * 20 ms. A region pair is cut off while none of its streams (several pods on each side, so a
 * killed node's own pod does not count) gets a reply. Prints JSON lines: per pair the longest cut
 * and the cuts over 1 s, each with the fault that was on; the faults injected; gateway changes.
 *
 * Faults: node, agent, tunnel daemon and UDP block on the active gateway of any region; a WAN cut
 * only on the cloud's (an edge's candidates share their router's uplink: cutting it cuts the
 * region, and no failover can help).
 *
 * Needs root and the lab's tools. Usage: npm run bench:chaos [-- --minutes 30] [--backend wireguard]
 * [--seed 1].
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gateways, labDown, labFail, labRestore, labUp } from '../src/lab/lab.ts';
import type { LabNode } from '../src/lab/layout.ts';
import type { LabState, NodeFault } from '../src/lab/state.ts';

const arg = (flag: string): string | undefined => (process.argv.includes(flag) ? process.argv[process.argv.indexOf(flag) + 1] : undefined);
const minutes = Number(arg('--minutes')) || 30;
const backend = (arg('--backend') ?? 'wireguard') as 'wireguard' | 'ipsec';
let seed = Number(arg('--seed')) || 1;
/** Deterministic, so a run can be repeated: mulberry32. */
const random = (): number => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const between = (lo: number, hi: number): number => lo + random() * (hi - lo);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const out = (name: string, value: number, unit: string, extra: Record<string, string | number> = {}): void => console.log(JSON.stringify({ name, value: Math.round(value * 100) / 100, unit, ...extra }));

interface Fault {
  readonly node: string;
  readonly region: string;
  readonly what: NodeFault;
  readonly from: number;
  to?: number;
}

/** One region pair: the last reply seen on any of its streams, and every silence longer than 1 s. */
interface Pair {
  readonly name: string;
  last: number;
  longest: number;
  readonly cuts: { from: number; ms: number }[];
}

function watch(pair: Pair, from: LabNode, to: LabNode, procs: ChildProcess[]): void {
  const ping = spawn('ip', ['netns', 'exec', from.podNetns, 'ping', '-D', '-n', '-i', '0.02', '-W', '1', to.podIP], { stdio: ['ignore', 'pipe', 'ignore'] });
  procs.push(ping);
  let rest = '';
  ping.stdout!.on('data', (d: Buffer) => {
    const lines = (rest + d.toString()).split('\n');
    rest = lines.pop()!;
    for (const line of lines) {
      const m = /^\[(\d+\.\d+)\] .*time=/.exec(line);
      if (!m) continue;
      const at = Number(m[1]) * 1000;
      if (at <= pair.last) continue;
      const gap = at - pair.last;
      if (pair.last > 0) {
        pair.longest = Math.max(pair.longest, gap);
        if (gap > 1000) pair.cuts.push({ from: pair.last, ms: gap });
      }
      pair.last = at;
    }
  });
}

async function activeOf(state: LabState, region: string): Promise<string | undefined> {
  return (await gateways(state)).find((g) => g.metadata.name === `gw-${region}`)?.status?.activeEndpoints?.find((e) => e.type === 'tunnel')?.nodeName;
}

const runDir = mkdtempSync(join(tmpdir(), 'raven-bench-chaos-'));
const quiet = { stdout: () => undefined, stderr: (s: string) => process.stderr.write(s) };
const name = `chaos${backend[0]}`;
const { state } = await labUp({ file: `test/fixtures/lab/seed-ha-${backend}.yaml`, name, runDir, nodesPerRegion: 2, symmetricNAT: false, wanLossPercent: 0, sameEdgeLAN: false, waitMs: 120_000 }, quiet);
const procs: ChildProcess[] = [];
let stopping = false;
process.once('SIGTERM', () => (stopping = true));
process.once('SIGINT', () => (stopping = true));
try {
  const rec = state.read();
  const node = (n: string): LabNode => rec.plan.nodes.find((x) => x.name === n)!;
  const pods = { cloud: ['cloud-gw-1', 'cloud-gw-2'], hangzhou: ['hz-3', 'hz-1', 'hz-2'], qingdao: ['qd-1', 'qd-2'] } as const;
  const pairs: Pair[] = [];
  for (const [a, b] of [['hangzhou', 'cloud'], ['qingdao', 'cloud'], ['hangzhou', 'qingdao']] as const) {
    const pair: Pair = { name: `${a}-${b}`, last: 0, longest: 0, cuts: [] };
    pairs.push(pair);
    for (const x of pods[a]) for (const y of pods[b]) watch(pair, node(x), node(y), procs);
  }
  const electionsAtStart = (readFileSync(state.log('controller'), 'utf8').match(/elected active tunnel endpoint/g) ?? []).length;
  await sleep(3000);
  const faults: Fault[] = [];
  const end = Date.now() + minutes * 60_000;
  process.stderr.write(`bench-chaos: ${backend}, ${minutes} min, faults every 20-60 s\n`);
  while (Date.now() < end && !stopping) {
    const started = Date.now();
    const region = pick(['cloud', 'hangzhou', 'qingdao'] as const);
    const what = pick<NodeFault>(region === 'cloud' ? ['node', 'agent', 'tunnel', 'udp-block', 'wan'] : ['node', 'agent', 'tunnel', 'udp-block']);
    const victim = await activeOf(state, region);
    if (victim) {
      const f: Fault = { node: victim, region, what, from: Date.now() };
      faults.push(f);
      process.stderr.write(`bench-chaos: ${new Date().toISOString()} ${what} on ${victim} (${region})\n`);
      await labFail(state, victim, what);
      await sleep(between(5000, 30_000));
      await labRestore(state, victim, what).catch(() => undefined); // tunnel: its agent restarted it already
      f.to = Date.now();
    }
    await sleep(Math.max(0, started + between(20_000, 60_000) - Date.now()));
  }
  await sleep(3000);
  const changes = (readFileSync(state.log('controller'), 'utf8').match(/elected active tunnel endpoint/g) ?? []).length - electionsAtStart;
  const during = (at: number): string => faults.filter((f) => f.from <= at + 1000 && (f.to ?? Infinity) >= at - 1000).map((f) => `${f.what}@${f.node}`).join('+') || 'none';
  for (const p of pairs) {
    out(`chaos_longest_cut_${p.name}_${backend}`, p.longest, 'ms', {
      cuts_over_1s: p.cuts.length,
      cuts: p.cuts.map((c) => `${Math.round(c.ms)}ms(${during(c.from)})`).join(' ') || 'none',
    });
  }
  out(`chaos_faults_${backend}`, faults.length, 'faults', { minutes, kinds: [...new Set(faults.map((f) => f.what))].map((k) => `${k}:${faults.filter((f) => f.what === k).length}`).join(',') });
  out(`chaos_gateway_changes_${backend}`, changes, 'changes');
} finally {
  for (const p of procs) p.kill('SIGTERM');
  await labDown({ name, runDir }, quiet);
  rmSync(runDir, { recursive: true, force: true });
}
