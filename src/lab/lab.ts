/**
 * `raven lab up | check | fail | restore | down`: a whole cluster of a topology on one machine.
 * `up` compiles the topology, builds the network (plan.ts, network.ts), starts the control plane
 * (supervisor.ts) and one real agent process per node, and waits for full connectivity. Every
 * process is recorded in the lab's state directory and only those are ever stopped.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { parseAllDocuments, stringify } from 'yaml';
import { compile } from '../compiler/compile.js';
import { readSources } from '../compiler/files.js';
import { ExecRunner, mustRun } from '../platform/command-runner.js';
import { isAlive, signal } from '../platform/owned-process.js';
import type { Gateway } from '../contract/gateway.js';
import { formatDiagnostic, hasErrors } from '../topology/diagnostics.js';
import { AGENT_CONFIG, type AgentConfigKey } from '../contract/agent-config.js';
import { AGENT_NODE_OPTIONS, GATEWAY_GROUP, GATEWAY_VERSION, PSK_FILE_NAME, WIREGUARD_RUN_DIR } from '../contract/names.js';
import { acceptsDials } from '../topology/mesh.js';
import { agentMounts } from '../compiler/agent-mounts.js';
import { checkLab, type CheckOptions, failures, type PairResult } from './check.js';
import { ravenCommand } from '../platform/raven-command.js';
import { buildDelayLine, startDelayLine } from './wan-delay.js';
import { uplinkHostsOf, WAN_LOSS_TABLE, wanLossRuleset } from './network.js';
import { buildNetwork, labNamespaces, removeNetwork, setNodeLinks, setUdpBlock, setWanLink, UDP_BLOCK_TABLE, wanLinkOf } from './network.js';
import { makeProxyCerts } from '../compiler/proxy-certs.js';
import { checkLabName, type LabNode, labNode, type LabOptions, type LabPlan, planLab } from './layout.js';
import { deletePods, startAgentPod, startControllerPods } from './pods.js';
import { labsIn, type LabRecord, LabState, type NodeFault, type NodeFaultRecord } from './state.js';
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

    const delayLine = plan.regions.some((r) => r.wanDelayMs > 0) ? await buildDelayLine(state, runner) : undefined;
    await buildNetwork(plan, runner, delayLine ? (line) => startDelayLine(state, delayLine, plan.switchNetns, line, runner) : undefined);
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
  // The DaemonSet's V8 limits (an --image pod gets them from its manifest), after any of the caller's.
  const nodeOptions = [process.env.NODE_OPTIONS, AGENT_NODE_OPTIONS].filter(Boolean).join(' ');
  const child = spawn(cmd, [...args, ...agentArgs], { detached: true, stdio: ['ignore', out, out], env: { ...process.env, RAVEN_LAB_DIR: state.dir, NODE_OPTIONS: nodeOptions } });
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

/**
 * Pings every pair. Nodes failed as a whole (`fail --what node`) are skipped; while the API is
 * paused (`fail --api`) the paths come from the Gateways as they were when it was paused.
 */
export async function labCheck(state: LabState, o: Partial<CheckOptions> = {}): Promise<PairResult[]> {
  const record = state.read();
  const skip = new Set(state.nodeFaults().filter((f) => f.what === 'node').map((f) => f.node));
  const gws = state.apiFault()?.gateways ?? (await gateways(state));
  return checkLab(record, [...gws], runner, { count: 3, intervalS: 0.2, concurrency: 8, ...o, skip: new Set([...skip, ...(o.skip ?? [])]) });
}

/** Tunnel daemons by the name the kernel gives their process (`/proc/<pid>/comm`). */
const TUNNEL_DAEMONS = new Set(['wireguard-go', 'charon']);

/**
 * The tunnel daemons (wireguard-go, charon) running in the node's network namespace, found by that
 * namespace (the lab's own) rather than by PID files: an agent in a container (`--image`) records
 * PIDs of its own PID namespace, which mean nothing here.
 */
export function tunnelDaemons(n: LabNode): { pid: number; name: string }[] {
  let netns: number;
  try {
    netns = statSync(`/run/netns/${n.netns}`).ino;
  } catch {
    return [];
  }
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .flatMap((pid) => {
      try {
        const name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        return TUNNEL_DAEMONS.has(name) && statSync(`/proc/${pid}/ns/net`).ino === netns && isAlive(pid) ? [{ pid, name }] : [];
      } catch {
        return [];
      }
    });
}

/** The node's tunnel port, from the agent config the lab mounted for it. */
function tunnelPort(state: LabState, n: LabNode): number {
  const key: AgentConfigKey = 'vpn-port';
  const file = join(state.nodeDir(n.name), 'config', key);
  const port = existsSync(file) ? Number(readFileSync(file, 'utf8').trim()) : NaN;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`node "${n.name}": no tunnel port in ${file}`);
  return port;
}

/**
 * Breaks one thing of a node (`what`, see NODE_FAULTS) and records what was done, so that
 * `labRestore` undoes exactly that and `labDown` knows of it. Returns what happened, in words.
 * - node: power cut: agent and tunnel daemon SIGKILLed, its switch ports down (its pairs are
 *   skipped by `check` until it is restored);
 * - agent: the agent process alone (with --image its container, whose tunnel daemon goes with it);
 * - tunnel: the tunnel daemon alone (SIGKILL), for the agent to notice;
 * - wan: its uplink (the switch's end of wan0; behind NAT, its region's router's uplink);
 * - udp-block: nftables in the node drops UDP to and from the tunnel port.
 */
export async function labFail(state: LabState, nodeName: string, what: NodeFault = 'node'): Promise<string> {
  const record = state.read();
  const n = labNode(record.plan, nodeName);
  if (state.nodeFault(n.name, what)) throw new Error(`node "${n.name}" is already failed with --what ${what}; run raven lab restore ${n.name} --what ${what} first`);
  const at = new Date().toISOString();
  switch (what) {
    case 'node': {
      await state.stop(`agent-${n.name}`, 0, 'SIGKILL');
      for (const pid of state.tunnelPids(n.name)) signal(pid, 'SIGKILL');
      await setNodeLinks(record.plan, n, false, runner);
      state.recordFault({ what, node: n.name, at });
      return 'failed (agent and tunnel killed, links down)';
    }
    case 'agent': {
      if (!state.livePid(`agent-${n.name}`)) throw new Error(`node "${n.name}": its agent is not running`);
      await state.stop(`agent-${n.name}`, 0, 'SIGKILL');
      state.recordFault({ what, node: n.name, at });
      return record.image ? 'agent container killed (its tunnel daemon with it, as in a cluster; links left up)' : 'agent killed (its tunnel daemon, routes and links left as they were)';
    }
    case 'tunnel': {
      const killed = tunnelDaemons(n);
      if (!killed.length) throw new Error(`node "${n.name}" runs no tunnel daemon (no wireguard-go or charon in ${n.netns}): it is neither a gateway nor a warm standby now`);
      for (const d of killed) signal(d.pid, 'SIGKILL');
      state.recordFault({ what, node: n.name, at, killed });
      return `tunnel daemon killed (${killed.map((d) => `${d.name} ${d.pid}`).join(', ')}); its agent is left running`;
    }
    case 'wan': {
      const link = wanLinkOf(record.plan, n);
      const holder = state.nodeFaults().find((f) => f.what === 'wan' && f.port === link.port);
      if (holder) throw new Error(`the uplink ${link.port} of node "${n.name}" is already down (fail ${holder.node} --what wan): region "${link.region ?? n.region}" shares it`);
      await setWanLink(record.plan, link, false, runner);
      state.recordFault({ what, node: n.name, at, ...link });
      return link.region ? `WAN cut: region ${link.region}'s NAT router uplink (${link.port}) is down, for every node of the region` : `WAN cut: its uplink (${link.port}) is down`;
    }
    case 'udp-block': {
      const port = tunnelPort(state, n);
      await setUdpBlock(n.netns, port, true, runner);
      state.recordFault({ what, node: n.name, at, port });
      return `UDP to and from port ${port} dropped (nftables table ${UDP_BLOCK_TABLE} in ${n.netns})`;
    }
  }
}

/**
 * Undoes a fault `labFail` recorded for the node: the one named, or its only one. Returns what was
 * done, in words. Where two faults touch the same thing (a node failed whole and its WAN cut), what
 * the other still holds down stays down.
 */
export async function labRestore(state: LabState, nodeName: string, what?: NodeFault): Promise<string> {
  const record = state.read();
  const n = labNode(record.plan, nodeName);
  const faults = state.nodeFaults().filter((f) => f.node === n.name);
  const kinds = faults.map((f) => f.what).join(', ');
  const f = what ? faults.find((x) => x.what === what) : faults.length === 1 ? faults[0] : undefined;
  if (!f) {
    if (what) throw new Error(`node "${n.name}" has no --what ${what} fault to restore${faults.length ? ` (it has: ${kinds})` : ''}`);
    throw new Error(faults.length ? `node "${n.name}" has several faults (${kinds}); name one with --what` : `node "${n.name}" is not failed`);
  }
  const message = await undo(state, record, n, f);
  state.forgetFault(n.name, f.what);
  return message;
}

async function undo(state: LabState, record: LabRecord, n: LabNode, f: NodeFaultRecord): Promise<string> {
  const all = state.nodeFaults();
  const agentRuns = (): boolean => state.livePid(`agent-${n.name}`) !== undefined;
  switch (f.what) {
    case 'node': {
      const wanHeld = all.some((x) => x.what === 'wan' && x.port === n.wanPort);
      await setNodeLinks(record.plan, n, true, runner, { keepWanDown: wanHeld });
      if (!agentRuns()) await startAgent(state, record, n);
      return `restored (links up${wanHeld ? ', but its WAN stays cut: restore --what wan' : ''}, agent started)`;
    }
    case 'agent': {
      if (all.some((x) => x.node === n.name && x.what === 'node')) throw new Error(`node "${n.name}" is failed as a whole too; restore it with --what node`);
      if (agentRuns()) return 'restored (its agent was running already)';
      await startAgent(state, record, n);
      return 'restored (agent started; it adopts what the kernel has)';
    }
    case 'tunnel': {
      const now = tunnelDaemons(n);
      return `nothing to undo: its agent restarts the daemon itself (running now: ${now.length ? now.map((d) => `${d.name} ${d.pid}`).join(', ') : 'none'})`;
    }
    case 'wan': {
      // A node failed whole holds its own WAN port down until it is restored.
      const held = all.find((x) => x.what === 'node' && labNode(record.plan, x.node).wanPort === f.port);
      if (held) return `restored (its uplink stays down while node ${held.node} is failed)`;
      await setWanLink(record.plan, f, true, runner);
      return `restored (uplink ${f.port} up)`;
    }
    case 'udp-block': {
      await setUdpBlock(n.netns, f.port, false, runner);
      return `restored (UDP port ${f.port} open again)`;
    }
  }
}

/**
 * `fail --api`: stops the lab's API server (the control plane process, SIGSTOP; the controller
 * keeps running and finds the API silent) for `ms`, after which a detached helper resumes it.
 * The Gateways as they were are recorded, so `check` still knows the paths meanwhile.
 */
export async function labFailApi(state: LabState, ms: number): Promise<string> {
  if (state.apiFault()) throw new Error('the lab API is paused already; run raven lab restore --api first');
  const pid = state.livePid('supervisor');
  if (pid === undefined) throw new Error(`lab "${state.name}": its control plane is not running`);
  const gws = await gateways(state);
  const at = new Date();
  const until = new Date(at.getTime() + ms);
  state.recordFault({ what: 'api', pid, at: at.toISOString(), until: until.toISOString(), gateways: gws });
  signal(pid, 'SIGSTOP');
  const out = openSync(state.log('api-resume'), 'a');
  const [cmd, ...args] = ravenCommand();
  const child = spawn(cmd, [...args, 'lab', 'resume-api', '--state-dir', state.dir], { detached: true, stdio: ['ignore', out, out], env: { ...process.env, RAVEN_LAB_DIR: state.dir } });
  child.unref();
  state.writePid('api-resume', child.pid!);
  return `API paused for ${ms / 1000} s (control plane pid ${pid} stopped); it resumes at ${until.toISOString()}, or at raven lab restore --api`;
}

/**
 * Restarts the lab's controller (SIGTERM, then a new process on the same kubeconfig and log), as
 * a Deployment rollout or a crash-restart would; resolves once the new one serves. Not with --image.
 */
export async function labRestartController(state: LabState): Promise<number> {
  const record = state.read();
  if (record.image) throw new Error('the controller of a lab up --image runs as a pod; restart it with runc');
  await state.stop('controller', 3000);
  const out = openSync(state.log('controller'), 'a');
  const [cmd, ...args] = ravenCommand();
  const child = spawn(cmd, [...args, 'controller', '--kubeconfig', state.kubeconfig, '--namespace', record.namespace, '--http-addr', '127.0.0.1:0'], { detached: true, stdio: ['ignore', out, out], env: { ...process.env, RAVEN_LAB_DIR: state.dir } });
  child.unref();
  state.writePid('controller', child.pid!);
  return child.pid!;
}

/** `fail --wan-loss REGION=PCT`: the region's uplink loses PCT % of its packets each way until `restore --wan-loss REGION`. */
export async function labFailWanLoss(state: LabState, region: string, percent: number): Promise<string> {
  const record = state.read();
  const netns = uplinkHostsOf(record.plan, region);
  if (state.wanLossFaults().some((f) => f.region === region)) throw new Error(`region "${region}" already has WAN loss; run raven lab restore --wan-loss ${region} first`);
  const rules = wanLossRuleset(percent);
  state.recordFault({ what: 'wan-loss', region, percent, netns, at: new Date().toISOString() });
  for (const ns of netns) await mustRun(runner, 'ip', ['netns', 'exec', ns, 'nft', '-f', '-'], rules);
  return `region ${region}: ${percent} % of WAN packets dropped each way (${netns.length === 1 && record.plan.regions.find((r) => r.name === region)?.nat ? 'at its NAT router' : `on ${netns.length} public host${netns.length === 1 ? '' : 's'}`})`;
}

export async function labRestoreWanLoss(state: LabState, region: string): Promise<string> {
  const f = state.wanLossFaults().find((x) => x.region === region);
  if (!f) throw new Error(`region "${region}" has no WAN loss to restore`);
  for (const ns of f.netns) await runner.run('ip', ['netns', 'exec', ns, 'nft', 'delete', 'table', 'inet', WAN_LOSS_TABLE]);
  state.forgetWanLoss(region);
  return `region ${region}: WAN loss removed`;
}

/** `restore --api`: resumes the paused API server now (the helper waiting to do it is stopped). */
export async function labRestoreApi(state: LabState): Promise<string> {
  const f = state.apiFault();
  if (!f) throw new Error(`the API of lab "${state.name}" is not paused`);
  await state.stop('api-resume', 0, 'SIGKILL');
  return resumeApi(state, f.pid);
}

/** The helper `labFailApi` starts (`raven lab resume-api`): waits until the pause is over, then resumes. */
export async function resumeApiWhenDue(state: LabState): Promise<void> {
  const f = state.apiFault();
  if (!f) return;
  await sleep(Math.max(0, Date.parse(f.until) - Date.now()));
  // Restored early (and perhaps paused again since): that pause is not ours to end.
  if (state.apiFault()?.at !== f.at) return;
  rmSync(state.pidFile('api-resume'), { force: true });
  resumeApi(state, f.pid);
}

function resumeApi(state: LabState, pid: number): string {
  const ours = state.owns(pid);
  if (ours) signal(pid, 'SIGCONT');
  state.forgetApiFault();
  return ours ? `API resumed (control plane pid ${pid})` : `the paused control plane (pid ${pid}) is gone; nothing to resume`;
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
  // A paused API server first: it could not stop (SIGTERM waits for SIGCONT), nor answer anyone.
  await state.stop('api-resume', 0, 'SIGKILL');
  const paused = state.apiFault();
  if (paused && state.owns(paused.pid)) signal(paused.pid, 'SIGCONT');
  const recorded = state.recorded();
  const agents = recorded.filter((w) => w.startsWith('agent-'));
  await Promise.all(agents.map((a) => state.stop(a, 5000)));
  for (const n of record?.plan.nodes ?? []) for (const pid of state.tunnelPids(n.name)) signal(pid, 'SIGKILL');
  await Promise.all(recorded.filter((w) => /^controller(-\d+)?$/.test(w)).map((c) => state.stop(c, 3000)));
  await deletePods(state, runner);
  await Promise.all(recorded.filter((w) => w.startsWith('fwd-')).map((f) => state.stop(f, 1000)));
  await state.stop('supervisor', 5000);
  // Before the namespaces go: a TAP outlives its namespace while its delay line holds it.
  await Promise.all(recorded.filter((w) => w.startsWith('wan-delay-')).map((d) => state.stop(d, 1000)));
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
