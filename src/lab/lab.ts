/**
 * `raven lab up | check | fail | restore | down`: a whole cluster of a topology on one machine.
 * `up` compiles the topology, builds the network (plan.ts, network.ts), starts the control plane
 * (supervisor.ts) and one real agent process per node, and waits for full connectivity. Every
 * process is recorded in the lab's state directory and only those are ever stopped.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { compile } from '../compiler/compile.js';
import { readSources } from '../compiler/files.js';
import { ExecRunner } from '../platform/command-runner.js';
import { isAlive, signal } from '../platform/owned-process.js';
import type { Gateway } from '../contract/gateway.js';
import { formatDiagnostic, hasErrors } from '../topology/diagnostics.js';
import { AGENT_CONFIG, type AgentConfigKey } from '../contract/agent-config.js';
import { GATEWAY_GROUP, GATEWAY_VERSION, PSK_FILE_NAME, WIREGUARD_RUN_DIR } from '../contract/names.js';
import { acceptsDials } from '../topology/mesh.js';
import { agentMounts } from '../compiler/agent-mounts.js';
import { checkLab, type CheckOptions, failures, type PairResult } from './check.js';
import { ravenCommand } from '../platform/raven-command.js';
import { buildNetwork, labNamespaces, removeNetwork, setNodeLinks } from './network.js';
import { makeProxyCerts } from '../compiler/proxy-certs.js';
import { checkLabName, type LabNode, labNode, type LabOptions, type LabPlan, planLab } from './layout.js';
import { deletePods, startAgentPod, startControllerPods } from './pods.js';
import { labsIn, type LabRecord, LabState } from './state.js';
import { unpackImage } from './containers.js';

export interface Io {
  readonly stdout: (s: string) => void;
  readonly stderr: (s: string) => void;
}

export interface UpOptions extends Omit<LabOptions, 'name'> {
  readonly file: string;
  readonly name?: string;
  readonly runDir: string;
  /** Wait until every pair that should connect does (ms; 0 = do not wait). */
  readonly waitMs: number;
  /** An OCI archive (`npm run image`): run the controller and agents from it, with runc, as the compiled manifests say. */
  readonly image?: string;
}

const runner = new ExecRunner();

/** The lab started but did not connect in time: it stays up for inspection. */
class NotConnectedError extends Error {}

export async function labUp(o: UpOptions, io: Io): Promise<{ state: LabState; connectedMs?: number }> {
  const t0 = Date.now();
  if (process.getuid?.() !== 0) throw new Error('raven lab up needs root (network namespaces)');
  const read = readSources([o.file]);
  const result = compile(read.sources);
  const diagnostics = [...read.diagnostics, ...result.diagnostics];
  for (const d of diagnostics) io.stderr(formatDiagnostic(d) + '\n');
  if (hasErrors(diagnostics) || !result.files) throw new Error(`${o.file} is not a valid topology; nothing was started`);
  if (result.topologies.length !== 1) throw new Error(`${o.file} holds ${result.topologies.length} clusters; a lab runs one`);
  const topology = result.topologies[0]!;
  const name = o.name ?? topology.cluster;
  checkLabName(name);
  const state = new LabState(o.runDir, name);
  const plan = planLab(topology, { ...o, name });
  if (state.exists()) throw new Error(`lab "${name}" is already up; run raven lab down ${name} first`);
  const leftover = await labNamespaces(plan.prefix, runner);
  if (leftover.length) throw new Error(`namespaces of an earlier lab "${name}" are still here (${leftover.slice(0, 3).join(', ')}...); run raven lab down ${name} first`);

  let record: LabRecord = {
    plan,
    topologyFile: o.file,
    cluster: topology.cluster,
    namespace: topology.namespace,
    backend: topology.vpn.backend,
    forwardNodeIP: topology.forwardNodeIP,
    natTraversal: topology.vpn.natTraversal,
    l3Tunnel: topology.l3Tunnel,
    createdAt: new Date().toISOString(),
  };
  state.create(record);
  try {
    if (o.image) {
      const image = await unpackImage(resolve(o.image), join(state.dir, 'image'), runner);
      record = { ...record, image: { archive: resolve(o.image), ref: image.ref, digest: image.digest, rootfs: image.rootfs, config: image.config } };
      state.create(record);
    }
    const objects = [...result.files.entries()]
      .filter(([path]) => path.startsWith(`${topology.cluster}/`) && /\/(crds|runtime|gateways)\//.test(path) && !path.endsWith('/kustomization.yaml'))
      .flatMap(([, text]) => parseAllDocuments(text).map((d) => d.toJS() as k8s.KubernetesObject));
    writeFileSync(state.objectsFile, objects.map((x) => stringify(x)).join('---\n'));
    if (record.backend === 'ipsec') writeFileSync(state.pskFile, randomBytes(24).toString('hex'), { mode: 0o600 });
    writeAgentConfigs(state, plan.nodes, objects, record.image === undefined);
    if (record.backend === 'ipsec') writePskFiles(state, plan.nodes, objects);
    if (topology.l7Proxy) writeProxyCerts(state, plan, objects);

    await buildNetwork(plan, runner);
    await startSupervisor(state);
    if (record.image) await startControllerPods(state, record, runner);
    for (const n of plan.nodes) await startAgent(state, record, n);
    const from = record.image ? `, every process from image ${record.image.ref} (${record.image.digest.slice(0, 19)})` : '';
    io.stdout(`lab ${name}: ${plan.nodes.length} nodes in ${plan.regions.length} regions (${record.backend}); control plane and agents started in ${((Date.now() - t0) / 1000).toFixed(1)} s${from}\n`);
    if (o.waitMs <= 0) return { state };
    const results = await waitConnected(state, o.waitMs);
    const bad = failures(results);
    if (bad.length) throw new NotConnectedError(`not every pair connected within ${o.waitMs / 1000} s (${bad.length} failing, e.g. ${bad[0]!.kind} ${bad[0]!.from} -> ${bad[0]!.to}); the lab stays up: see raven lab check ${name} and ${state.dir}/logs`);
    const connectedMs = Date.now() - t0;
    io.stdout(`lab ${name}: every pair that should connect does, ${(connectedMs / 1000).toFixed(1)} s after start\n`);
    return { state, connectedMs };
  } catch (err) {
    // A failure before the lab could start leaves nothing behind; one while waiting leaves it up to inspect.
    if (!(err instanceof NotConnectedError)) await labDown({ name, runDir: o.runDir }, { stdout: () => undefined, stderr: io.stderr });
    throw err;
  }
}

/** The Gateway's L7 proxy is a server (others dial its proxy endpoint), as the agent's proxy role decides. */
const proxyServes = (gw: Gateway): boolean => acceptsDials(gw.spec?.exposeType, gw.spec?.endpoints?.find((e) => e.type === 'proxy'));

/**
 * The L7 proxy's certificates, as each region's proxy Secret would provide them (throwaway CAs,
 * `makeProxyCerts`). Every node's directory holds the tunnel CA (`ca.crt`); nodes of exposed regions
 * (proxy servers) the server pair, the HTTPS front's client CA (`client-ca.crt`) and the node CA
 * (`node-ca.crt`); nodes of the other regions only their own region's client pair (`client.crt`,
 * CN gw-<region>), so no node can speak for another region. Nodes whose DaemonSet mounts no proxy
 * Secret (no gateway candidates) get nothing, as in a cluster. `kubelet-client.crt` (a client of the
 * HTTPS front) stays in the lab's proxy-ca directory.
 */
function writeProxyCerts(state: LabState, plan: LabPlan, objects: readonly k8s.KubernetesObject[]): void {
  const dir = join(state.dir, 'proxy-ca');
  const exposedGateways = new Set(objects.filter((x) => x.kind === 'Gateway' && proxyServes(x as Gateway)).map((x) => x.metadata?.name));
  const exposed = (n: LabNode): boolean => exposedGateways.has(plan.regions.find((r) => r.name === n.region)!.gateway);
  const servers = plan.nodes.filter(exposed);
  const edges = plan.regions.filter((r) => !exposedGateways.has(r.gateway)).map((r) => r.gateway);
  makeProxyCerts(dir, { serverNames: ['localhost', ...servers.map((n) => n.name)], serverIPs: ['127.0.0.1', ...servers.flatMap((n) => [n.lanIP, ...(n.publicIP ? [n.publicIP] : [])])], gateways: edges });
  for (const n of plan.nodes) {
    // Only where the compiled DaemonSet mounts the region's proxy Secret (its gateway candidates).
    if (!agentMounts(objects, n.name).proxySecret) continue;
    const to = join(state.nodeDir(n.name), 'proxy-certs');
    mkdirSync(to, { recursive: true, mode: 0o700 });
    const gw = plan.regions.find((r) => r.name === n.region)!.gateway;
    const files: [string, string][] = exposed(n)
      ? [['ca.crt', 'ca.crt'], ['server.crt', 'server.crt'], ['server.key', 'server.key'], ['client-ca.crt', 'client-ca.crt'], ['node-ca.crt', 'node-ca.crt']]
      : [['ca.crt', 'ca.crt'], [`client-${gw}.crt`, 'client.crt'], [`client-${gw}.key`, 'client.key']];
    for (const [from, name] of files) {
      copyFileSync(join(dir, from), join(to, name));
      chmodSync(join(to, name), 0o600);
    }
  }
}

/**
 * The PSK file, as the Secret volume of the gateway DaemonSets provides it, on the nodes whose
 * compiled DaemonSet mounts it (the gateway candidates) and nowhere else.
 */
function writePskFiles(state: LabState, nodes: readonly LabNode[], objects: readonly k8s.KubernetesObject[]): void {
  for (const n of nodes) {
    if (!agentMounts(objects, n.name).psk) continue;
    const dir = join(state.nodeDir(n.name), 'ipsec');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    copyFileSync(state.pskFile, pskFileOf(state, n));
    chmodSync(pskFileOf(state, n), 0o400);
  }
}

/** Where a node's agent finds the PSK (absent on nodes that are no gateway candidate). */
export function pskFileOf(state: LabState, n: LabNode): string {
  return join(state.nodeDir(n.name), 'ipsec', PSK_FILE_NAME);
}

/**
 * The compiled raven-agent-config, as the DaemonSet mounts it. Agents run as processes of this
 * machine's (not in containers) share its ports, so then health and metrics move to free loopback ports.
 */
function writeAgentConfigs(state: LabState, nodes: readonly LabNode[], objects: readonly k8s.KubernetesObject[], sharedPorts: boolean): void {
  const cm = objects.find((x) => x.kind === 'ConfigMap' && x.metadata?.name === AGENT_CONFIG) as k8s.V1ConfigMap | undefined;
  if (!cm?.data) throw new Error(`the compiled output has no ${AGENT_CONFIG} ConfigMap`);
  const loopback: Partial<Record<AgentConfigKey, string>> = { 'health-probe-addr': '127.0.0.1:0', 'metric-bind-addr': '127.0.0.1:0' };
  for (const n of nodes) {
    const dir = join(state.nodeDir(n.name), 'config');
    mkdirSync(dir, { recursive: true });
    const data = sharedPorts ? { ...cm.data, ...loopback } : cm.data;
    for (const [k, v] of Object.entries(data)) writeFileSync(join(dir, k), v);
  }
}

async function startSupervisor(state: LabState): Promise<void> {
  const out = openSync(state.log('supervisor'), 'a');
  const [cmd, ...args] = ravenCommand();
  const child = spawn(cmd, [...args, 'lab', 'serve', '--state-dir', state.dir], { detached: true, stdio: ['ignore', out, out], env: { ...process.env, RAVEN_LAB_DIR: state.dir } });
  child.unref();
  state.writePid('supervisor', child.pid!);
  const deadline = Date.now() + 30_000;
  while (!existsSync(state.readyFile)) {
    if (!isAlive(child.pid!) || Date.now() > deadline) throw new Error(`the lab control plane did not start: ${tail(state.log('supervisor'))}`);
    await sleep(50);
  }
}

/** Starts the node's agent: as a process of this machine, or (`--image`) as its DaemonSet's container. */
export async function startAgent(state: LabState, record: LabRecord, n: LabNode): Promise<void> {
  if (record.image) return startAgentPod(state, record, n, runner);
  const dir = state.nodeDir(n.name);
  const out = openSync(state.log(`agent-${n.name}`), 'a');
  const [cmd, ...args] = ravenCommand();
  const agentArgs = ['agent', '--kubeconfig', state.kubeconfig, '--namespace', record.namespace, '--node-name', n.name, '--node-ip', n.lanIP, '--netns', n.netns, '--device', n.device, '--config-dir', join(dir, 'config'), '--state-dir', join(dir, 'state'), '--proxy-cert-dir', join(dir, 'proxy-certs'), '--psk-file', pskFileOf(state, n)];
  const child = spawn(cmd, [...args, ...agentArgs], { detached: true, stdio: ['ignore', out, out], env: { ...process.env, RAVEN_LAB_DIR: state.dir } });
  child.unref();
  state.writePid(`agent-${n.name}`, child.pid!);
}

/** Polls the connectivity check until every pair that should connect does, or the time is up. */
async function waitConnected(state: LabState, ms: number): Promise<PairResult[]> {
  const deadline = Date.now() + ms;
  const record = state.read();
  const quick: CheckOptions = { count: 1, intervalS: 0.2, concurrency: 16 };
  // Twice in a row: right after the first election, tunnels still settle (IPsec SAs re-keyed as
  // the status fills in), and one lucky round is not "connected".
  let passes = 0;
  for (;;) {
    const results = await checkLab(record, await gateways(state), runner, quick);
    passes = failures(results).length ? 0 : passes + 1;
    if (passes === 2 || Date.now() > deadline) return results;
    await sleep(passes ? 100 : 250);
  }
}

export async function gateways(state: LabState): Promise<Gateway[]> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(state.kubeconfig);
  const list = (await kc.makeApiClient(k8s.CustomObjectsApi).listClusterCustomObject({ group: GATEWAY_GROUP, version: GATEWAY_VERSION, plural: 'gateways' })) as { items: Gateway[] };
  return list.items;
}

/** Which lab a command means: the one named, or the only one up. */
export function resolveLab(name: string | undefined, runDir: string): LabState {
  if (name) {
    checkLabName(name);
    return new LabState(runDir, name);
  }
  const labs = labsIn(runDir);
  if (labs.length === 1) return new LabState(runDir, labs[0]!);
  throw new Error(labs.length ? `several labs are up (${labs.join(', ')}); name one` : `no lab is up under ${runDir}`);
}

export async function labCheck(state: LabState, o: Partial<CheckOptions> = {}): Promise<PairResult[]> {
  const record = state.read();
  const skip = new Set(readdirSync(join(state.dir, 'failed')));
  return checkLab(record, await gateways(state), runner, { count: 3, intervalS: 0.2, concurrency: 8, ...o, skip: new Set([...skip, ...(o.skip ?? [])]) });
}

/** Power cut: the node's agent and tunnel daemon are killed (SIGKILL) and its switch ports go down. */
export async function labFail(state: LabState, nodeName: string): Promise<void> {
  const record = state.read();
  const n = labNode(record.plan, nodeName);
  await state.stop(`agent-${n.name}`, 0, 'SIGKILL');
  for (const pid of state.tunnelPids(n.name)) signal(pid, 'SIGKILL');
  await setNodeLinks(record.plan, n, false, runner);
  writeFileSync(state.failedFile(n.name), new Date().toISOString());
}

/** Power back: ports up, agent started; it adopts or rebuilds what the kernel still has. */
export async function labRestore(state: LabState, nodeName: string): Promise<void> {
  const record = state.read();
  const n = labNode(record.plan, nodeName);
  if (state.livePid(`agent-${n.name}`)) throw new Error(`node "${n.name}" is not failed: its agent is running`);
  await setNodeLinks(record.plan, n, true, runner);
  await startAgent(state, record, n);
  rmSync(state.failedFile(n.name), { force: true });
}

/**
 * Removes everything of the lab: agents first (SIGTERM: they remove their routes and tunnels), then
 * tunnel daemons left by killed agents, the control plane, any other process carrying the lab's
 * directory, every namespace with the lab's prefix, stale WireGuard sockets of its devices, and the
 * state. Works on a half-built or crashed lab: it needs only the name.
 */
export async function labDown(o: { name: string; runDir: string }, io: Io): Promise<void> {
  checkLabName(o.name);
  const state = new LabState(o.runDir, o.name);
  const record = state.exists() ? state.read() : undefined;
  const recorded = state.recorded();
  const agents = recorded.filter((w) => w.startsWith('agent-'));
  await Promise.all(agents.map((a) => state.stop(a, 5000)));
  for (const n of record?.plan.nodes ?? []) for (const pid of state.tunnelPids(n.name)) signal(pid, 'SIGKILL');
  await Promise.all(recorded.filter((w) => /^controller(-\d+)?$/.test(w)).map((c) => state.stop(c, 3000)));
  await deletePods(state, runner);
  await Promise.all(recorded.filter((w) => w.startsWith('fwd-')).map((f) => state.stop(f, 1000)));
  await state.stop('supervisor', 5000);
  for (const pid of strays(state)) signal(pid, 'SIGKILL');
  const removed = await removeNetwork(`rl-${o.name}`, runner);
  for (const n of record?.plan.nodes ?? []) rmSync(`${WIREGUARD_RUN_DIR}/${n.device}.sock`, { force: true });
  state.remove();
  io.stdout(`lab ${o.name}: down (${agents.length} agents stopped, ${removed.length} namespaces removed)\n`);
}

/** Live processes started for this lab (they carry its directory) that no PID file names. */
function strays(state: LabState): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)
    .map(Number)
    .filter((pid) => state.owns(pid));
}

function tail(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim().split('\n').slice(-8).join('\n');
  } catch {
    return '(no log)';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
