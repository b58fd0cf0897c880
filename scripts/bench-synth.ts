/**
 * Synthesis benchmark on a generated 1,000-region × 10-node topology (`npm run bench`).
 *
 * Every measurement runs in its own child process, so its peak RSS is its own; each is repeated
 * and the median reported. Figures go to stdout as JSON lines, {"name","value","unit"}; progress
 * and notes go to stderr.
 *
 *   synth   compile([{path, bytes}]) from src/compiler/compile.ts: parse, validate, construct, toJson, YAML
 *           (wall, peak RSS), then writeTree of the result into a fresh temp dir (its own figure)
 *   plain   toYaml() of the same objects (parsed back from the compiled tree beforehand, so only
 *           stringifying is timed) — the floor synth is compared against
 *   ratio   synth wall / plain wall (target ≤ 1.5)
 *   cli     `node bin/raven.mjs synth <file> --out <dir>` end to end
 *
 * The primary figures are cold (one compile per fresh process, as the CLI runs it); `*_warm_wall`
 * repeat the same work in the same process afterwards (best of WARM_RUNS), for steady state.
 *
 * Environment: BENCH_REPS (default 7) repetitions of synth and plain, BENCH_CLI_REPS (default 5);
 * TMPDIR picks the temp dir (writeTree is mostly file-system time: try TMPDIR=/dev/shm).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';

const REGIONS = 1000;
const NODES_PER_REGION = 10;
const CLOUD_REGIONS = 2;
const SIZE = `${REGIONS}x${NODES_PER_REGION}`;
const RATIO_TARGET = 1.5;
/** Extra in-process runs after the measured cold one, for the warm figures. */
const WARM_RUNS = 2;

const SCRIPT = fileURLToPath(import.meta.url);
const ROOT = resolve(dirname(SCRIPT), '..');
const TIME = '/usr/bin/time';

const reps = (name: string, fallback: number): number => {
  const v = Number(process.env[name] ?? fallback);
  return Number.isInteger(v) && v > 0 ? v : fallback;
};

const log = (s: string): void => {
  process.stderr.write(`[bench] ${s}\n`);
};

/** What a child reports: one JSON line on its stdout. */
interface ChildResult {
  wallMs: number;
  /** Peak RSS of the child up to the end of the timed section, MiB. */
  rssMiB: number;
  /** Peak RSS before the timed section (runtime + modules + inputs), MiB. */
  baselineMiB: number;
  /** The same work again in the same process (JIT warm, ajv schema compiled): best of WARM_RUNS. */
  warmMs: number;
  writeMs?: number;
  outputChars?: number;
  files?: number;
}

const maxRssMiB = (): number => process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB

// ---------------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------------

/** Child: the full in-process compile, then writeTree, timed separately. */
async function childSynth(topologyFile: string, outDir: string): Promise<ChildResult> {
  const { compile } = await import('../src/compiler/compile.ts');
  const { writeTree } = await import('../src/compiler/files.ts');
  const bytes = readFileSync(topologyFile);
  const baselineMiB = maxRssMiB();

  const t0 = performance.now();
  const result = compile([{ path: topologyFile, bytes }]);
  const wallMs = performance.now() - t0;
  const rssMiB = maxRssMiB();

  if (!result.files) throw new Error(`compile failed with ${result.diagnostics.length} diagnostics`);
  let outputChars = 0;
  for (const content of result.files.values()) outputChars += content.length;

  const t1 = performance.now();
  writeTree(outDir, result.files);
  const writeMs = performance.now() - t1;

  const warmMs = bestOf(WARM_RUNS, () => compile([{ path: topologyFile, bytes }]));
  return { wallMs, rssMiB, baselineMiB, warmMs, writeMs, outputChars, files: result.files.size };
}

/** Child: only toYaml() of every object, with the compiler's own options. */
async function childPlain(objectsFile: string): Promise<ChildResult> {
  // The compiler's toYaml (same stringify options); importing it loads the same modules synth does.
  const { toYaml } = await import('../src/compiler/bundle.ts');
  const objects = JSON.parse(readFileSync(objectsFile, 'utf8')) as unknown[];
  const baselineMiB = maxRssMiB();

  const t0 = performance.now();
  const out: string[] = new Array(objects.length);
  for (let i = 0; i < objects.length; i++) out[i] = toYaml(objects[i]);
  const wallMs = performance.now() - t0;
  const rssMiB = maxRssMiB();

  let outputChars = 0;
  for (const s of out) outputChars += s.length;

  const warmMs = bestOf(WARM_RUNS, () => objects.map((o) => toYaml(o)));
  return { wallMs, rssMiB, baselineMiB, warmMs, outputChars };
}

/** Fastest of `n` timed calls of `f` (its result is kept until timed, so it is not optimised away). */
function bestOf(n: number, f: () => unknown): number {
  let best = Infinity;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const r = f();
    const ms = performance.now() - t0;
    if (r === undefined) throw new Error('no result');
    best = Math.min(best, ms);
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Parent
// ---------------------------------------------------------------------------------------------

function runChild(args: readonly string[]): ChildResult {
  const r = spawnSync(process.execPath, ['--import', 'tsx', SCRIPT, '--child', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`child ${args[0]} exited with ${r.status ?? r.signal}`);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as ChildResult;
}

function runCli(topologyFile: string, outDir: string, timeFile: string | undefined): { wallMs: number; rssMiB?: number } {
  const node = [process.execPath, join(ROOT, 'bin/raven.mjs'), 'synth', topologyFile, '--out', outDir];
  const [cmd, ...args] = timeFile ? [TIME, '-f', '%M', '-o', timeFile, ...node] : node;
  const t0 = performance.now();
  const r = spawnSync(cmd!, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  const wallMs = performance.now() - t0;
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`raven synth exited with ${r.status ?? r.signal}`);
  if (!timeFile) return { wallMs };
  const kib = Number(readFileSync(timeFile, 'utf8').trim().split('\n').pop());
  return { wallMs, ...(Number.isFinite(kib) && { rssMiB: kib / 1024 }) };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const round = (x: number, digits = 1): number => Number(x.toFixed(digits));

function emit(name: string, value: number, unit: string): void {
  process.stdout.write(JSON.stringify({ name, value, unit }) + '\n');
}

async function parent(): Promise<number> {
  const { generateTopology } = await import('./gen-topology.ts');
  const { compile } = await import('../src/compiler/compile.ts');
  const { formatDiagnostic } = await import('../src/topology/diagnostics.ts');
  const { header, toYaml } = await import('../src/compiler/bundle.ts');
  const { parseAllDocuments } = await import('yaml');

  const tmp = mkdtempSync(join(tmpdir(), 'raven-bench-'));
  try {
    // 1. Generate and validate (zero errors, or the benchmark is meaningless).
    const text = generateTopology({ regions: REGIONS, nodesPerRegion: NODES_PER_REGION, cloudRegions: CLOUD_REGIONS });
    const topologyFile = join(tmp, `bench-${SIZE}.yaml`);
    writeFileSync(topologyFile, text);
    const bytes = readFileSync(topologyFile);
    log(`generated ${topologyFile}: ${REGIONS} regions x ${NODES_PER_REGION} nodes, ${bytes.length} bytes`);

    const result = compile([{ path: topologyFile, bytes }]);
    const errors = result.diagnostics.filter((d) => d.severity === 'error');
    const warnings = result.diagnostics.length - errors.length;
    if (errors.length > 0 || !result.files) {
      for (const d of result.diagnostics.slice(0, 20)) process.stderr.write(formatDiagnostic(d) + '\n');
      log(`FAIL: generated topology has ${errors.length} error(s)`);
      return 1;
    }
    const t = result.topologies[0]!;
    const nodes = new Set(t.regions.flatMap((r) => r.nodes));
    if (t.regions.length !== REGIONS || nodes.size !== REGIONS * NODES_PER_REGION) {
      log(`FAIL: expected ${REGIONS} regions / ${REGIONS * NODES_PER_REGION} nodes, got ${t.regions.length} / ${nodes.size}`);
      return 1;
    }
    log(`validated: 0 errors, ${warnings} warning(s); ${result.files.size} files`);

    // 2. The objects for `plain`: parse the compiled tree back once, and check that stringifying
    //    them reproduces every file byte for byte (so plain does exactly synth's YAML work).
    const head = header([topologyFile]);
    const objects: unknown[] = [];
    let outputChars = 0;
    let plainChars = 0;
    for (const [path, content] of result.files) {
      if (!content.startsWith(head)) throw new Error(`${path} lacks the generated header`);
      const docs = parseAllDocuments(content.slice(head.length));
      const objs = (Array.isArray(docs) ? docs : [docs]).map((d) => d.toJS() as unknown);
      const yamls = objs.map((o) => toYaml(o));
      if (head + yamls.join('---\n') !== content) throw new Error(`${path} does not round-trip through toYaml`);
      outputChars += content.length;
      for (const y of yamls) plainChars += y.length;
      objects.push(...objs);
    }
    const objectsFile = join(tmp, 'objects.json');
    writeFileSync(objectsFile, JSON.stringify(objects));
    log(`plain input: ${objects.length} objects (round-trip verified)`);

    // 3. Children, synth and plain interleaved so drift affects both alike.
    const nReps = reps('BENCH_REPS', 7);
    const synth: ChildResult[] = [];
    const plain: ChildResult[] = [];
    for (let i = 0; i < nReps; i++) {
      const s = runChild(['synth', topologyFile, join(tmp, `synth-out-${i}`)]);
      rmSync(join(tmp, `synth-out-${i}`), { recursive: true, force: true });
      const p = runChild(['plain', objectsFile]);
      if (s.outputChars !== outputChars || p.outputChars !== plainChars) throw new Error('a child produced different output than the parent');
      synth.push(s);
      plain.push(p);
      log(`rep ${i + 1}/${nReps}: synth ${s.wallMs.toFixed(0)} ms (warm ${s.warmMs.toFixed(0)} ms, write ${s.writeMs!.toFixed(0)} ms, ${s.rssMiB.toFixed(0)} MiB), plain ${p.wallMs.toFixed(0)} ms (warm ${p.warmMs.toFixed(0)} ms, ${p.rssMiB.toFixed(0)} MiB)`);
    }

    const cliReps = reps('BENCH_CLI_REPS', 5);
    const cli: { wallMs: number; rssMiB?: number }[] = [];
    const timeFile = existsSync(TIME) ? join(tmp, 'time.txt') : undefined;
    for (let i = 0; i < cliReps; i++) {
      const out = join(tmp, `cli-out-${i}`);
      cli.push(runCli(topologyFile, out, timeFile));
      rmSync(out, { recursive: true, force: true });
      log(`cli rep ${i + 1}/${cliReps}: ${cli[i]!.wallMs.toFixed(0)} ms`);
    }

    // 4. Figures.
    const synthWall = median(synth.map((r) => r.wallMs));
    const plainWall = median(plain.map((r) => r.wallMs));
    emit(`synth_${SIZE}_wall`, round(synthWall), 'ms');
    emit(`synth_${SIZE}_rss_peak`, round(median(synth.map((r) => r.rssMiB))), 'MiB');
    emit(`synth_${SIZE}_rss_baseline`, round(median(synth.map((r) => r.baselineMiB))), 'MiB');
    emit(`write_tree_${SIZE}_wall`, round(median(synth.map((r) => r.writeMs!))), 'ms');
    emit(`plain_yaml_${SIZE}_wall`, round(plainWall), 'ms');
    emit(`plain_yaml_${SIZE}_rss_peak`, round(median(plain.map((r) => r.rssMiB))), 'MiB');
    emit(`plain_yaml_${SIZE}_rss_baseline`, round(median(plain.map((r) => r.baselineMiB))), 'MiB');
    emit(`synth_over_plain_${SIZE}_ratio`, round(synthWall / plainWall, 2), 'ratio');
    const synthWarm = median(synth.map((r) => r.warmMs));
    const plainWarm = median(plain.map((r) => r.warmMs));
    emit(`synth_${SIZE}_warm_wall`, round(synthWarm), 'ms');
    emit(`plain_yaml_${SIZE}_warm_wall`, round(plainWarm), 'ms');
    emit(`synth_over_plain_${SIZE}_warm_ratio`, round(synthWarm / plainWarm, 2), 'ratio');
    emit(`cli_synth_${SIZE}_wall`, round(median(cli.map((r) => r.wallMs))), 'ms');
    const cliRss = cli.map((r) => r.rssMiB).filter((x): x is number => x !== undefined);
    if (cliRss.length) emit(`cli_synth_${SIZE}_rss_peak`, round(median(cliRss)), 'MiB');

    const ratio = synthWall / plainWall;
    log(`synth/plain = ${ratio.toFixed(2)} (target <= ${RATIO_TARGET})${ratio > RATIO_TARGET ? ': ABOVE TARGET' : ''}`);
    return 0;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------

const argv = process.argv.slice(2);
if (argv[0] === '--child') {
  const [, mode, a, b] = argv;
  const r = mode === 'synth' ? await childSynth(a!, b!) : mode === 'plain' ? await childPlain(a!) : undefined;
  if (!r) throw new Error(`unknown child mode ${String(mode)}`);
  process.stdout.write(JSON.stringify(r) + '\n');
} else {
  process.exitCode = await parent();
}
