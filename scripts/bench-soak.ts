/**
 * Memory soak: `raven lab up topologies/seed.yaml` (WireGuard, 6 nodes, L7 proxy on), run from the
 * compiled build (build/raven.js, so every process it starts is compiled code), left running for
 * SOAK_MINUTES (default 10) while every agent's and the controller's RSS is read from
 * /proc/<pid>/status every SOAK_INTERVAL_S (default 10) seconds, with what each agent starts and
 * its pod's memory limit also counts (wireguard-go, the `raven proxy` process). A connectivity check
 * (one ping per pod pair) runs every minute, so the figures are of a lab that works.
 *
 * Heap: every agent, the controller and every proxy serve process and V8 heap gauges on /metrics
 * (registerProcessMetrics: nodejs_heap_size_used_bytes, nodejs_heap_size_total_bytes,
 * nodejs_external_memory_bytes), scraped at each sample beside RSS, so V8 growing its heap to its
 * working size can be told from a leak. Where each listens, nothing in src/ is changed for it: the
 * lab binds the agents' and the controller's endpoints to 127.0.0.1:0, and both log the bound port
 * at start ("serving health and metrics port=N metricsPort=M", in logs/agent-NODE.log and
 * logs/controller.log; the last such line, for a restarted process); a proxy runs in its node's
 * network namespace with the metricsAddr of its state/proxy.json, scraped from inside that
 * namespace (nsenter --net=/proc/PID/ns/net curl). RssAnon (heap and other anonymous memory,
 * without the mapped node binary) is printed beside RSS.
 *
 * JSON lines per kind (agent, controller, wireguard-go, proxy, and agent-pod = agent + proxy +
 * wireguard-go of one node at the same instant): RSS at start and end (worst process), peak (the
 * highest sample or the kernel's VmHWM, so start-up counts), the highest sample of the second half
 * (steady state), and growth per hour: a least-squares line over the second
 * half of the samples (the first half is warm-up), the worst process's slope, with its 95 %
 * interval, so "below noise" means the interval contains 0. The same (start, end, peak, growth) for
 * heap used, heap total and external memory of agents, controller and proxies (`soak_KIND_heap_*`,
 * `soak_KIND_heap_total_*`, `soak_KIND_external_*`; a scrape that failed is left out of the fit),
 * and `soak_KIND_heap_floor_growth_per_hour`: the line through the lowest heap used of six windows
 * of the second half, close to heap live after collection, which is what a leak raises (a window
 * with no full collection in it shows a higher floor, so this errs towards growth).
 *
 * Needs root, wireguard-go, wg, nftables and a current build (`npm run build`). Always takes the lab
 * down at the end, also on error or SIGINT/SIGTERM. Usage: npm run bench:soak
 * (SOAK_MINUTES=1 npm run bench:soak for a trial; SOAK_SAMPLES=FILE also writes every sample there,
 * a JSON line per process; SOAK_FROM=FILE prints the report of such a file again, without a lab).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { failures } from '../src/lab/check.ts';
import { labCheck, labDown } from '../src/lab/lab.ts';
import { LabState } from '../src/lab/state.ts';

interface Options {
  readonly minutes: number;
  readonly intervalS: number;
  readonly topology: string;
  readonly name: string;
}

interface Sample {
  /** Seconds since the first sample. */
  readonly t: number;
  readonly rssMiB: number;
  readonly anonMiB: number;
  readonly hwmMiB: number;
  /** V8 heap used and allocated, external memory, from /metrics (NaN: not scraped). */
  readonly heapMiB: number;
  readonly heapTotalMiB: number;
  readonly externalMiB: number;
}

type Kind = 'agent' | 'controller' | 'wireguard-go' | 'proxy' | 'agent-pod';

function options(env: NodeJS.ProcessEnv): Options {
  const num = (key: string, dflt: number, min: number): number => {
    const v = env[key] === undefined ? dflt : Number(env[key]);
    if (!Number.isFinite(v) || v < min) throw new Error(`${key}=${env[key]} is not a number ≥ ${min}`);
    return v;
  };
  return Object.freeze({ minutes: num('SOAK_MINUTES', 10, 0.5), intervalS: num('SOAK_INTERVAL_S', 10, 1), topology: 'topologies/seed.yaml', name: 'soak' });
}

const root = join(import.meta.dirname, '..');
const built = join(root, 'build', 'raven.js');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const out = (name: string, value: number, unit: string, extra: Record<string, string | number> = {}): void => console.log(JSON.stringify({ name, value: Math.round(value * 100) / 100, unit, ...extra }));
const quiet = { stdout: () => undefined, stderr: (s: string) => process.stderr.write(s) };

/** The newest modification time under dir. */
function newest(dir: string): number {
  let t = statSync(dir).mtimeMs;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

/** Refuses a missing or stale build: the figures must be of the compiled code a cluster runs. */
function checkBuild(): void {
  if (!existsSync(built)) throw new Error(`${built} is missing: run npm run build first`);
  const b = statSync(built).mtimeMs;
  if (newest(join(root, 'src')) > b || statSync(join(root, 'package.json')).mtimeMs > b) throw new Error(`${built} is older than src/ or package.json: run npm run build first`);
}

/** VmRSS, RssAnon and VmHWM of a process in MiB, or undefined once it is gone. */
function memoryOf(pid: number): { rss: number; anon: number; hwm: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) / 1024;
    return { rss: kib('VmRSS'), anon: kib('RssAnon'), hwm: kib('VmHWM') };
  } catch {
    return undefined;
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

const MiB = 1024 * 1024;
const HEAP_GAUGES = { heapMiB: 'nodejs_heap_size_used_bytes', heapTotalMiB: 'nodejs_heap_size_total_bytes', externalMiB: 'nodejs_external_memory_bytes' } as const;
type Heap = Record<keyof typeof HEAP_GAUGES, number>;
const NO_HEAP: Heap = { heapMiB: NaN, heapTotalMiB: NaN, externalMiB: NaN };

/** The heap gauges of a /metrics page, in MiB (NaN where missing). */
function heapOf(text: string): Heap {
  const g = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN) / MiB;
  return { heapMiB: g(HEAP_GAUGES.heapMiB), heapTotalMiB: g(HEAP_GAUGES.heapTotalMiB), externalMiB: g(HEAP_GAUGES.externalMiB) };
}

/** The metrics port of the last "serving health and metrics" line of a log, or undefined. */
function loggedMetricsPort(log: string): number | undefined {
  const lines = log.split('\n').filter((l) => / serving health and metrics /.test(l));
  const last = lines.at(-1);
  if (!last) return undefined;
  const port = Number((/ metricsPort=(\d+)/.exec(last) ?? / port=(\d+)/.exec(last))?.[1]);
  return port > 0 ? port : undefined;
}

/** Where a process serves /metrics: a port on the root namespace's loopback, or (proxy) inside its own namespace. */
function metricsTarget(state: LabState, kind: Exclude<Kind, 'agent-pod'>, node: string | undefined): { port: number; inNetnsOf: boolean } | undefined {
  try {
    if (kind === 'controller' || kind === 'agent') {
      const port = loggedMetricsPort(readFileSync(state.log(kind === 'controller' ? 'controller' : `agent-${node}`), 'utf8'));
      return port === undefined ? undefined : { port, inNetnsOf: false };
    }
    if (kind === 'proxy') {
      const addr = (JSON.parse(readFileSync(join(state.nodeDir(node!), 'state', 'proxy.json'), 'utf8')) as { metricsAddr?: string }).metricsAddr;
      const port = Number(/(\d+)$/.exec(addr ?? '')?.[1]);
      return port > 0 ? { port, inNetnsOf: true } : undefined;
    }
  } catch {
    // not written yet
  }
  return undefined;
}

async function scrape(pid: number, target: { port: number; inNetnsOf: boolean } | undefined): Promise<Heap> {
  if (!target) return NO_HEAP;
  const url = `http://127.0.0.1:${target.port}/metrics`;
  try {
    if (!target.inNetnsOf) {
      const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
      return res.ok ? heapOf(await res.text()) : NO_HEAP;
    }
    const text = await new Promise<string>((resolve, reject) =>
      execFile('nsenter', [`--net=/proc/${pid}/ns/net`, 'curl', '-sf', '-m', '3', url], { timeout: 5000 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
    );
    return heapOf(text);
  } catch {
    return NO_HEAP;
  }
}

/** Every process to sample, by a stable key (`agent/hz-1`, `proxy/hz-1`, ...) with its kind and node. */
function processes(state: LabState): Map<string, { kind: Exclude<Kind, 'agent-pod'>; node?: string; pid: number }> {
  const found = new Map<string, { kind: Exclude<Kind, 'agent-pod'>; node?: string; pid: number }>();
  const controller = state.livePid('controller');
  if (controller !== undefined) found.set('controller', { kind: 'controller', pid: controller });
  for (const n of state.read().plan.nodes) {
    const agent = state.livePid(`agent-${n.name}`);
    if (agent !== undefined) found.set(`agent/${n.name}`, { kind: 'agent', node: n.name, pid: agent });
    const dir = join(state.nodeDir(n.name), 'state');
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.pid'))) {
      const kind = f === 'proxy.pid' ? 'proxy' : f.startsWith('wireguard-go.') ? 'wireguard-go' : undefined;
      const pid = Number(readFileSync(join(dir, f), 'utf8'));
      if (kind && pid > 0 && state.owns(pid)) found.set(`${kind}/${n.name}`, { kind, node: n.name, pid });
    }
  }
  return found;
}

type Field = 'rssMiB' | keyof Heap;

/** Least-squares slope (per second) of one field and its standard error; samples without it are left out. */
function fit(all: readonly Sample[], field: Field = 'rssMiB'): { slope: number; se: number } {
  const xs = all.filter((x) => Number.isFinite(x[field]));
  const n = xs.length;
  if (n < 2) return { slope: NaN, se: Infinity };
  const mt = xs.reduce((s, x) => s + x.t, 0) / n;
  const my = xs.reduce((s, x) => s + x[field], 0) / n;
  const sxx = xs.reduce((s, x) => s + (x.t - mt) ** 2, 0);
  const slope = xs.reduce((s, x) => s + (x.t - mt) * (x[field] - my), 0) / sxx;
  const residual = xs.reduce((s, x) => s + (x[field] - my - slope * (x.t - mt)) ** 2, 0);
  return { slope, se: n > 2 ? Math.sqrt(residual / (n - 2) / sxx) : Infinity };
}

const secondHalf = (s: readonly Sample[]): Sample[] => s.slice(Math.floor(s.length / 2));

/**
 * The lowest sample of each of six equal windows of `s` (at least 60 s each): heap used falls to
 * what is live after each collection, so a line through these floors is what a leak raises, and the
 * sawtooth between collections does not tilt it.
 */
function floors(s: readonly Sample[], field: Field): Sample[] {
  if (s.length < 2) return [...s];
  const t0 = s[0]!.t;
  const w = Math.max(60, (s.at(-1)!.t - t0) / 6);
  const by = new Map<number, Sample>();
  for (const x of s) {
    const k = Math.min(5, Math.floor((x.t - t0) / w));
    const cur = by.get(k);
    if (!cur || x[field] < cur[field]) by.set(k, x);
  }
  return [...by.values()];
}
const finite = (s: readonly Sample[], field: Field): Sample[] => s.filter((x) => Number.isFinite(x[field]));

function report(series: Map<string, { kind: Kind; samples: Sample[] }>, o: Options): void {
  const kinds: Kind[] = ['agent', 'controller', 'wireguard-go', 'proxy', 'agent-pod'];
  for (const kind of kinds) {
    const all = [...series.entries()].filter(([, s]) => s.kind === kind && s.samples.length >= 4);
    if (!all.length) continue;
    const worst = <T>(f: (s: Sample[]) => number, extra: (key: string, s: Sample[]) => T): { value: number; of: T } => {
      let best = { value: -Infinity, of: undefined as T };
      for (const [key, s] of all) {
        const v = f(s.samples);
        if (v > best.value) best = { value: v, of: extra(key, s.samples) };
      }
      return best;
    };
    const name = `soak_${kind.replace('-', '_')}`;
    const count = { processes: all.length };
    const start = worst((s) => s[0]!.rssMiB, (key) => key);
    const end = worst((s) => s.at(-1)!.rssMiB, (key) => key);
    const endAnon = worst((s) => s.at(-1)!.anonMiB, (key) => key);
    const peak = worst((s) => Math.max(...s.map((x) => Math.max(x.rssMiB, x.hwmMiB))), (key) => key);
    const steady = worst((s) => Math.max(...s.slice(Math.floor(s.length / 2)).map((x) => x.rssMiB)), (key) => key);
    const growth = worst(
      (s) => fit(secondHalf(s)).slope * 3600,
      (_key, s) => fit(secondHalf(s)),
    );
    const slopes = all.map(([key, s]) => `${key.split('/')[1] ?? key}:${(fit(secondHalf(s.samples)).slope * 3600).toFixed(2)}`);
    out(`${name}_rss_start`, start.value, 'MiB', { ...count, process: start.of });
    out(`${name}_rss_end`, end.value, 'MiB', { ...count, process: end.of, rss_anon: Math.round(endAnon.value * 10) / 10 });
    out(`${name}_rss_peak`, peak.value, 'MiB', { ...count, process: peak.of });
    out(`${name}_rss_steady_max`, steady.value, 'MiB', { ...count, process: steady.of });
    out(`${name}_rss_growth_per_hour`, growth.value, 'MiB/h', { ...count, ci95: Math.round(1.96 * growth.of.se * 3600 * 100) / 100, fit_over_s: Math.round(o.minutes * 30), per_process: slopes.join(' ') });
    if (kind === 'wireguard-go' || kind === 'agent-pod') continue;
    for (const [field, suffix] of [['heapMiB', 'heap'], ['heapTotalMiB', 'heap_total'], ['externalMiB', 'external']] as const) {
      const has = all.filter(([, s]) => finite(s.samples, field).length >= 4);
      if (!has.length) {
        out(`${name}_${suffix}_start`, NaN, 'MiB', { processes: 0, error: 'no /metrics scrape succeeded' });
        continue;
      }
      const pick = (f: (s: Sample[]) => number): { value: number; of: string; s: Sample[] } => {
        let best = { value: -Infinity, of: '', s: [] as Sample[] };
        for (const [key, s] of has) {
          const v = f(finite(s.samples, field));
          if (v > best.value) best = { value: v, of: key, s: finite(s.samples, field) };
        }
        return best;
      };
      const hc = { processes: has.length };
      const first = pick((s) => s[0]![field]);
      const last = pick((s) => s.at(-1)![field]);
      const top = pick((s) => Math.max(...s.map((x) => x[field])));
      const steep = pick((s) => fit(secondHalf(s), field).slope * 3600);
      const f = fit(secondHalf(steep.s), field);
      const per = has.map(([key, s]) => `${key.split('/')[1] ?? key}:${(fit(secondHalf(finite(s.samples, field)), field).slope * 3600).toFixed(2)}`);
      const scraped = has.reduce((n, [, s]) => n + finite(s.samples, field).length, 0);
      const tried = has.reduce((n, [, s]) => n + s.samples.length, 0);
      out(`${name}_${suffix}_start`, first.value, 'MiB', { ...hc, process: first.of });
      out(`${name}_${suffix}_end`, last.value, 'MiB', { ...hc, process: last.of });
      out(`${name}_${suffix}_peak`, top.value, 'MiB', { ...hc, process: top.of });
      out(`${name}_${suffix}_growth_per_hour`, steep.value, 'MiB/h', { ...hc, process: steep.of, ci95: Math.round(1.96 * f.se * 3600 * 100) / 100, per_process: per.join(' '), scrapes: `${scraped}/${tried}` });
      if (field !== 'heapMiB') continue;
      // Heap used after collection: the slope of the six window minima of the second half.
      const low = pick((s) => fit(floors(secondHalf(s), field), field).slope * 3600);
      const lf = fit(floors(secondHalf(low.s), field), field);
      const lows = has.map(([key, s]) => `${key.split('/')[1] ?? key}:${(fit(floors(secondHalf(finite(s.samples, field)), field), field).slope * 3600).toFixed(2)}`);
      out(`${name}_heap_floor_growth_per_hour`, low.value, 'MiB/h', { ...hc, process: low.of, ci95: Math.round(1.96 * lf.se * 3600 * 100) / 100, floor_end: Math.round(floors(secondHalf(low.s), field).at(-1)![field] * 100) / 100, per_process: lows.join(' ') });
    }
  }
}

async function main(o: Options): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the soak needs root (raven lab)');
  checkBuild();
  const runDir = mkdtempSync(join(tmpdir(), 'raven-bench-soak-'));
  const state = new LabState(runDir, o.name);
  let up: ChildProcess | undefined;
  let stopping = false;
  const cleanUp = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    if (up && up.exitCode === null && up.signalCode === null) {
      const exited = new Promise((r) => up!.once('exit', r));
      up.kill('SIGTERM');
      await exited;
    }
    await labDown({ name: o.name, runDir }, quiet).catch((e: unknown) => process.stderr.write(`bench-soak: lab down failed: ${String(e)}\n`));
    rmSync(runDir, { recursive: true, force: true });
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stderr.write(`bench-soak: ${sig}, taking the lab down\n`);
      void cleanUp().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
    });
  }
  try {
    // The built CLI, so the supervisor, controller, agents and proxies are all build/raven.js.
    up = spawn(process.execPath, [built, 'lab', 'up', o.topology, '--name', o.name, '--run-dir', runDir, '--wait', '120s'], { stdio: ['ignore', 2, 2] });
    const code = await new Promise<number | null>((r) => up!.once('exit', r));
    if (code !== 0) throw new Error(`raven lab up exited with ${code}`);
    if (stopping) return;
    const first = processes(state);
    for (const [key, p] of first) {
      if ((p.kind === 'agent' || p.kind === 'controller' || p.kind === 'proxy') && !cmdline(p.pid).includes(built)) throw new Error(`${key} (pid ${p.pid}) does not run ${built}: ${cmdline(p.pid)}`);
    }
    process.stderr.write(`bench-soak: sampling ${first.size} processes every ${o.intervalS} s for ${o.minutes} min (${[...first.keys()].join(', ')})\n`);

    const series = new Map<string, { kind: Kind; samples: Sample[] }>();
    const add = (key: string, kind: Kind, s: Sample): void => {
      const cur = series.get(key) ?? { kind, samples: [] };
      cur.samples.push(s);
      series.set(key, cur);
    };
    const t0 = Date.now();
    const end = t0 + o.minutes * 60_000;
    let checks = 0;
    let failedChecks = 0;
    let nextCheck = t0 + 60_000;
    for (let i = 0; !stopping; i++) {
      const t = (Date.now() - t0) / 1000;
      const pods = new Map<string, { rss: number; anon: number; hwm: number }>();
      const now = [...processes(state)];
      // Heap scrapes first, all at once (a few ms), then RSS, so both are of the same instant.
      const heaps = await Promise.all(now.map(([, p]) => (p.kind === 'wireguard-go' ? NO_HEAP : scrape(p.pid, metricsTarget(state, p.kind, p.node)))));
      for (const [i, [key, p]] of now.entries()) {
        const m = memoryOf(p.pid);
        if (!m) continue;
        add(key, p.kind, { t, rssMiB: m.rss, anonMiB: m.anon, hwmMiB: m.hwm, ...heaps[i]! });
        if (p.node && p.kind !== 'controller') {
          const pod = pods.get(p.node) ?? { rss: 0, anon: 0, hwm: 0 };
          pods.set(p.node, { rss: pod.rss + m.rss, anon: pod.anon + m.anon, hwm: pod.hwm + m.hwm });
        }
      }
      // The pod's peak is the highest sum seen, not the sum of each process's own VmHWM.
      for (const [node, m] of pods) add(`agent-pod/${node}`, 'agent-pod', { t, rssMiB: m.rss, anonMiB: m.anon, hwmMiB: 0, ...NO_HEAP });
      if (Date.now() >= end) break;
      if (Date.now() >= nextCheck) {
        nextCheck += 60_000;
        checks++;
        const bad = failures(await labCheck(state, { count: 1, kinds: ['pod'] }));
        if (bad.length) {
          failedChecks++;
          process.stderr.write(`bench-soak: connectivity check ${checks}: ${bad.length} pairs failed\n`);
        }
      }
      await sleep(Math.max(0, t0 + (i + 1) * o.intervalS * 1000 - Date.now()));
    }
    if (stopping) return;
    if (process.env.SOAK_SAMPLES) writeFileSync(process.env.SOAK_SAMPLES, [...series].map(([key, v]) => JSON.stringify({ key, kind: v.kind, samples: v.samples })).join('\n') + '\n');
    out('soak_duration', (Date.now() - t0) / 60_000, 'min', { interval_s: o.intervalS, samples: Math.max(...[...series.values()].map((s) => s.samples.length)) });
    out('soak_connectivity_checks_passed', checks - failedChecks, 'checks', { of: checks });
    report(series, o);
  } finally {
    await cleanUp();
  }
}

/** SOAK_FROM=FILE: the report of a SOAK_SAMPLES file again, without a lab (nulls in it are NaN). */
function reportFrom(file: string): void {
  const series = new Map<string, { kind: Kind; samples: Sample[] }>();
  for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
    const { key, kind, samples } = JSON.parse(line) as { key: string; kind: Kind; samples: Record<string, number | null>[] };
    series.set(key, { kind, samples: samples.map((x) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, v ?? NaN])) as unknown as Sample) });
  }
  const last = Math.max(...[...series.values()].map((s) => s.samples.at(-1)?.t ?? 0));
  report(series, { ...options(process.env), minutes: last / 60 });
}

if (process.env.SOAK_FROM) reportFrom(process.env.SOAK_FROM);
else await main(options(process.env));
