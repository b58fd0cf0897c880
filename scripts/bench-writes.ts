/**
 * The API write budget (issue 13, item 6): steady-state heartbeat writes per node per second in a
 * cluster of REGIONS x NODES, and failover latency on evidence in that cluster.
 *
 * - The topology comes from scripts/gen-topology.ts and is compiled by the compiler: its CRD, its
 *   Gateways (member nodes, endpoints), raven-cfg.
 * - The embedded API server runs as its own process (`raven lab apiserver`); `raven controller`
 *   runs as its own process, as in a cluster.
 * - Every node runs the agent's own heartbeat code (src/agent/heartbeat.ts `HeartbeatWriter`),
 *   thousands of them in this process, started at spread phases as real agents start. Only the
 *   health they report is synthetic: a backend up, and on each standby its active answering. No
 *   kernel, no probes.
 * - Writes are counted twice: by a Lease watch (what the API server applied) and by the writers'
 *   own request counters (replace, read, create).
 * - Failover: in FAILOVERS edge regions, one after another, the active's heartbeat stops and its
 *   standby reports it unreachable (one write, as a real standby does the moment it loses it). The
 *   latency is from that write being sent to a watcher seeing the Gateway's new active.
 *
 *   npm run bench:writes -- [--regions 1000] [--nodes 10] [--seconds 60] [--failovers 5]
 *
 * Prints JSON lines {"name","value","unit"}.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { HeartbeatWriter } from '../src/agent/heartbeat.ts';
import { compile } from '../src/compiler/compile.ts';
import type { Gateway } from '../src/contract/gateway.ts';
import { type AgentHealth, CANDIDATE_RENEW_MS } from '../src/contract/heartbeat.ts';
import { systemClock, Timers } from '../src/platform/timers.ts';
import { waitFor } from '../test/support/cluster-harness.ts';
import { generateTopology } from './gen-topology.ts';

const { values } = parseArgs({ options: { regions: { type: 'string', default: '1000' }, nodes: { type: 'string', default: '10' }, seconds: { type: 'string', default: '60' }, failovers: { type: 'string', default: '5' } } });
const REGIONS = Number(values.regions);
const NODES = Number(values.nodes);
const SECONDS = Number(values.seconds);
const FAILOVERS = Number(values.failovers);
const NS = 'raven-system';

const emit = (name: string, value: number, unit: string, extra: Record<string, unknown> = {}): void => console.log(JSON.stringify({ name, value: Math.round(value * 1000) / 1000, unit, regions: REGIONS, nodesPerRegion: NODES, ...extra }));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (m: string): void => void process.stderr.write(`bench-writes: ${m}\n`);
function started(cmd: string[], ready: RegExp, what: string): Promise<{ proc: ChildProcess; out: () => string; ready: RegExpExecArray }> {
  // BENCH_PROFILE_DIR=DIR: the controller writes a CPU profile there when it stops.
  const profile = cmd[0] === 'controller' && process.env.BENCH_PROFILE_DIR ? ['--prof', `--logfile=${process.env.BENCH_PROFILE_DIR}/controller-v8.log`, '--no-logfile-per-isolate'] : [];
  const proc = spawn(process.execPath, [...profile, 'bin/raven.mjs', ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out = (out + d).slice(-20_000)));
  proc.stderr!.on('data', (d) => (out = (out + d).slice(-20_000)));
  return waitFor(() => {
    const m = ready.exec(out);
    return m ? { proc, out: () => out, ready: m } : undefined;
  }, 60_000, () => `${what} to start; it said:\n${out}`);
}

// The cluster, as the compiler writes it.
const dir = mkdtempSync(join(tmpdir(), 'raven-bench-writes-'));
const t0 = Date.now();
const compiled = compile([{ path: `bench-${REGIONS}x${NODES}.yaml`, bytes: Buffer.from(generateTopology({ regions: REGIONS, nodesPerRegion: NODES })) }] as never);
if (!compiled.files) throw new Error(`the generated topology did not compile: ${JSON.stringify(compiled.diagnostics.slice(0, 3))}`);
const docs = [...compiled.files].flatMap(([path, text]) => (/\/(crds|gateways)\/|raven-cfg|namespace-raven-system/.test(path) ? [{ path, obj: parseYaml(String(text)) as k8s.KubernetesObject }] : []));
const crd = docs.find((d) => d.path.includes('/crds/') && d.obj.kind === 'CustomResourceDefinition')!;
writeFileSync(join(dir, 'gateways-crd.yaml'), JSON.stringify(crd.obj));
const gateways = docs.filter((d) => d.obj.kind === 'Gateway').map((d) => d.obj as unknown as Gateway);
log(`compiled ${gateways.length} Gateways in ${Date.now() - t0} ms`);

const kubeconfig = join(dir, 'kubeconfig');
// --port 0 (the default): a free port, written into the kubeconfig.
const api = await started(['lab', 'apiserver', '--kubeconfig', kubeconfig, '--crds', dir], /serving http/, 'the API server');
const kc = new k8s.KubeConfig();
kc.loadFromFile(kubeconfig);
const objects = k8s.KubernetesObjectApi.makeApiClient(kc);
const core = kc.makeApiClient(k8s.CoreV1Api);
const custom = kc.makeApiClient(k8s.CustomObjectsApi);
let controller: Awaited<ReturnType<typeof started>> | undefined;
const writers = new Map<string, HeartbeatWriter>();
const timers: Timers[] = [];
const watches: { abort(): void }[] = [];

try {
  await core.createNamespace({ body: { metadata: { name: NS } } });
  for (const d of docs) if (d.obj.kind === 'ConfigMap') await objects.create({ ...d.obj, metadata: { ...d.obj.metadata, namespace: NS } });
  const nodes: { name: string; ip: string; cidr: string }[] = [];
  for (const gw of gateways) {
    const members = gw.metadata.annotations!['raven-gitops.io/member-nodes']!.split(',');
    const cidrs = gw.metadata.annotations!['raven-gitops.io/pod-cidrs']!.split(',');
    members.forEach((name, i) => nodes.push({ name, ip: `192.168.${nodes.length >> 8}.${nodes.length & 255}`, cidr: cidrs[i]! }));
  }
  const inBatches = async <T>(items: readonly T[], f: (x: T) => Promise<unknown>): Promise<void> => {
    for (let i = 0; i < items.length; i += 50) await Promise.all(items.slice(i, i + 50).map(f));
  };
  await inBatches(gateways, (gw) => custom.createClusterCustomObject({ group: 'raven.openyurt.io', version: 'v1beta1', plural: 'gateways', body: gw }));
  await inBatches(nodes, async (n) => {
    await core.createNode({ body: { metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name } }, spec: { podCIDR: n.cidr, podCIDRs: [n.cidr] } } });
    await core.replaceNodeStatus({ name: n.name, body: { metadata: { name: n.name }, status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: n.ip }] } } as k8s.V1Node });
  });
  log(`created ${gateways.length} Gateways and ${nodes.length} Nodes in ${Date.now() - t0} ms`);

  // Every node's heartbeat: the agent's writer, with synthetic health.
  const candidates = new Map<string, string>();
  for (const gw of gateways) for (const e of gw.spec?.endpoints ?? []) if (e.type === 'tunnel') candidates.set(e.nodeName, gw.metadata.name);
  const active = new Map<string, string>();
  const sees = new Map<string, { node: string; reachable: boolean }>();
  const coordination = kc.makeApiClient(k8s.CoordinationV1Api);
  let errors = 0;
  const health = (node: string) => async (): Promise<AgentHealth> => {
    const seen = sees.get(node);
    return { backendUp: true, peers: {}, ...(seen && { activeGateway: { ...seen, lanReachable: true, observedAt: Date.now() } }) };
  };
  for (const n of nodes) {
    const t = new Timers(systemClock);
    timers.push(t);
    writers.set(n.name, new HeartbeatWriter(coordination, { node: n.name, namespace: NS, clock: systemClock, timers: t, candidate: () => candidates.has(n.name), health: health(n.name), onError: () => void errors++ }));
  }
  // Agents start at spread times, as after a rollout: over one renew period.
  const order = [...writers.values()];
  for (let i = 0; i < order.length; i++) {
    order[i]!.start();
    if (i % 100 === 99) await sleep((CANDIDATE_RENEW_MS * 100) / order.length);
  }
  log(`started ${writers.size} heartbeat writers (${candidates.size} candidates) in ${Date.now() - t0} ms`);

  // What the API server applied: every Lease write, and every Gateway status write.
  let leaseWrites = 0;
  const statusSeen = new Map<string, string>();
  const statusChanges: { at: number; gateway: string; active: string }[] = [];
  const watch = new k8s.Watch(kc);
  watches.push(await watch.watch(`/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`, {}, () => void leaseWrites++, () => undefined));
  watches.push(
    await watch.watch('/apis/raven.openyurt.io/v1beta1/gateways', {}, (_type, gw: Gateway) => {
      const a = (gw.status?.activeEndpoints ?? []).find((e) => e.type === 'tunnel')?.nodeName ?? '';
      if (statusSeen.get(gw.metadata.name) === a) return;
      statusSeen.set(gw.metadata.name, a);
      active.set(gw.metadata.name, a);
      statusChanges.push({ at: Date.now(), gateway: gw.metadata.name, active: a });
    }, () => undefined),
  );

  controller = await started(['controller', '--kubeconfig', kubeconfig, '--namespace', NS, '--http-addr', '127.0.0.1:0'], /serving health and metrics port=(\d+)/, 'the controller');
  await waitFor(() => gateways.every((g) => active.get(g.metadata.name)), Number(process.env.BENCH_ELECT_TIMEOUT_MS ?? 300_000), 'every Gateway to have an active tunnel endpoint');
  log(`every Gateway elected at ${Date.now() - t0} ms`);
  // Then the rest of the first pass (member labels on 10,000 nodes, Events): settled when the
  // controller's reconcile count stands still for 3 s.
  const metricsPort = Number(controller.ready[1]);
  const reconciles = async (): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    return [...text.matchAll(/^raven_controller_reconcile_total\{[^}]*\} (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
  };
  let last = -1;
  let stillSince = Date.now();
  await waitFor(async () => {
    const n = await reconciles();
    if (n !== last) [last, stillSince] = [n, Date.now()];
    return Date.now() - stillSince >= 3000 || undefined;
  }, 600_000, 'the controller to settle after the first election');
  log(`controller settled at ${Date.now() - t0} ms after ${last} reconciles`);
  // Standbys watch their active (synthetic: it answers); the report is written once, on change.
  for (const gw of gateways) {
    const a = active.get(gw.metadata.name)!;
    for (const e of gw.spec?.endpoints ?? []) {
      if (e.type === 'tunnel' && e.nodeName !== a && !sees.has(e.nodeName)) {
        sees.set(e.nodeName, { node: a, reachable: true });
        void writers.get(e.nodeName)!.beatNow();
      }
    }
  }
  await sleep(CANDIDATE_RENEW_MS * 1.5);

  // Steady state.
  const requests = (): number => [...writers.values()].reduce((s, w) => s + w.requests.replace + w.requests.read + w.requests.create, 0);
  /** The controller's CPU time so far (ms), from /proc. */
  const cpuMs = (): number => {
    const f = readFileSync(`/proc/${controller!.proc.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
  };
  const [writes0, requests0, changes0, errors0, at0, cpu0, reconciles0] = [leaseWrites, requests(), statusChanges.length, errors, Date.now(), cpuMs(), await reconciles()];
  await sleep(SECONDS * 1000);
  const secs = (Date.now() - at0) / 1000;
  emit('controller_steady_cpu_share', (cpuMs() - cpu0) / 1000 / secs, 'cores');
  emit('controller_steady_reconciles_per_second', ((await reconciles()) - reconciles0) / secs, 'reconciles/s');
  emit('controller_rss', Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${controller!.proc.pid}/status`, 'utf8'))?.[1]) / 1024, 'MiB');
  const perNode = (leaseWrites - writes0) / secs / nodes.length;
  emit('heartbeat_writes_per_node_per_second', perNode, 'writes/s/node', { target: 0.1, nodes: nodes.length, seconds: Math.round(secs) });
  emit('heartbeat_requests_per_node_per_second', (requests() - requests0) / secs / nodes.length, 'requests/s/node');
  emit('heartbeat_writes_per_second', (leaseWrites - writes0) / secs, 'writes/s', { candidates: candidates.size });
  emit('heartbeat_write_errors', errors - errors0, 'errors');
  emit('steady_state_gateway_changes', statusChanges.length - changes0, 'changes');

  // Failover on evidence, in edge regions one after another.
  const edges = gateways.filter((g) => g.metadata.labels?.['raven-gitops.io/region-type'] === 'edge').slice(0, FAILOVERS);
  const latencies: number[] = [];
  for (const gw of edges) {
    const name = gw.metadata.name;
    const victim = active.get(name)!;
    const standby = (gw.spec?.endpoints ?? []).find((e) => e.type === 'tunnel' && e.nodeName !== victim)!.nodeName;
    writers.get(victim)!.stop();
    sees.set(standby, { node: victim, reachable: false });
    const sent = Date.now();
    void writers.get(standby)!.beatNow();
    const moved = await waitFor(() => statusChanges.find((c) => c.gateway === name && c.at >= sent && c.active === standby), 30_000, `${name} to fail over from ${victim} to ${standby}`);
    latencies.push(moved.at - sent);
  }
  latencies.sort((a, b) => a - b);
  emit('failover_on_evidence_median', latencies[Math.floor(latencies.length / 2)] ?? NaN, 'ms', { target: 1000, runs: latencies.length });
  emit('failover_on_evidence_max', latencies.at(-1) ?? NaN, 'ms', { runs: latencies.length });
} finally {
  for (const w of watches) w.abort();
  for (const w of writers.values()) w.stop();
  for (const t of timers) t.stop();
  controller?.proc.kill('SIGTERM');
  api.proc.kill('SIGTERM');
  await sleep(500);
  rmSync(dir, { recursive: true, force: true });
}
