/**
 * Memory soak: `raven lab up topologies/seed.yaml` (WireGuard, 6 nodes, L7 proxy on), run from the
 * compiled build (build/raven.js, so every process it starts is compiled code), left running for
 * SOAK_MINUTES (default 10) while every agent's and the controller's RSS is read from
 * /proc/<pid>/status every SOAK_INTERVAL_S (default 10) seconds, with what each agent starts and
 * its pod's memory limit also counts (wireguard-go, the `raven proxy` process). A connectivity check
 * (one ping per pod pair) runs every minute, so the figures are of a lab that works.
 *
 * Heap: neither process exposes process or heap metrics, so this reads RSS only; RssAnon (heap and
 * other anonymous memory, without the mapped node binary) is printed beside it.
 *
 * JSON lines per kind (agent, controller, wireguard-go, proxy, and agent-pod = agent + proxy +
 * wireguard-go of one node at the same instant): RSS at start and end (worst process), peak (the
 * highest sample or the kernel's VmHWM, so start-up counts), the highest sample of the second half
 * (steady state), and growth per hour: a least-squares line over the second
 * half of the samples (the first half is warm-up), the worst process's slope, with its 95 %
 * interval, so "below noise" means the interval contains 0.
 *
 * Needs root, wireguard-go, wg, nftables and a current build (`npm run build`). Always takes the lab
 * down at the end, also on error or SIGINT/SIGTERM. Usage: npm run bench:soak
 * (SOAK_MINUTES=1 npm run bench:soak for a trial).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
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

/** Least-squares slope (per second) and its standard error. */
function fit(xs: readonly Sample[]): { slope: number; se: number } {
  const n = xs.length;
  const mt = xs.reduce((s, x) => s + x.t, 0) / n;
  const my = xs.reduce((s, x) => s + x.rssMiB, 0) / n;
  const sxx = xs.reduce((s, x) => s + (x.t - mt) ** 2, 0);
  const slope = xs.reduce((s, x) => s + (x.t - mt) * (x.rssMiB - my), 0) / sxx;
  const residual = xs.reduce((s, x) => s + (x.rssMiB - my - slope * (x.t - mt)) ** 2, 0);
  return { slope, se: n > 2 ? Math.sqrt(residual / (n - 2) / sxx) : Infinity };
}

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
      (s) => fit(s.slice(Math.floor(s.length / 2))).slope * 3600,
      (_key, s) => fit(s.slice(Math.floor(s.length / 2))),
    );
    const slopes = all.map(([key, s]) => `${key.split('/')[1] ?? key}:${(fit(s.samples.slice(Math.floor(s.samples.length / 2))).slope * 3600).toFixed(2)}`);
    out(`${name}_rss_start`, start.value, 'MiB', { ...count, process: start.of });
    out(`${name}_rss_end`, end.value, 'MiB', { ...count, process: end.of, rss_anon: Math.round(endAnon.value * 10) / 10 });
    out(`${name}_rss_peak`, peak.value, 'MiB', { ...count, process: peak.of });
    out(`${name}_rss_steady_max`, steady.value, 'MiB', { ...count, process: steady.of });
    out(`${name}_rss_growth_per_hour`, growth.value, 'MiB/h', { ...count, ci95: Math.round(1.96 * growth.of.se * 3600 * 100) / 100, fit_over_s: Math.round(o.minutes * 30), per_process: slopes.join(' ') });
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
      for (const [key, p] of processes(state)) {
        const m = memoryOf(p.pid);
        if (!m) continue;
        add(key, p.kind, { t, rssMiB: m.rss, anonMiB: m.anon, hwmMiB: m.hwm });
        if (p.node && p.kind !== 'controller') {
          const pod = pods.get(p.node) ?? { rss: 0, anon: 0, hwm: 0 };
          pods.set(p.node, { rss: pod.rss + m.rss, anon: pod.anon + m.anon, hwm: pod.hwm + m.hwm });
        }
      }
      // The pod's peak is the highest sum seen, not the sum of each process's own VmHWM.
      for (const [node, m] of pods) add(`agent-pod/${node}`, 'agent-pod', { t, rssMiB: m.rss, anonMiB: m.anon, hwmMiB: 0 });
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
    out('soak_duration', (Date.now() - t0) / 60_000, 'min', { interval_s: o.intervalS, samples: Math.max(...[...series.values()].map((s) => s.samples.length)) });
    out('soak_connectivity_checks_passed', checks - failedChecks, 'checks', { of: checks });
    report(series, o);
  } finally {
    await cleanUp();
  }
}

await main(options(process.env));
