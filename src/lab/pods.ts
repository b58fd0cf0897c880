/**
 * The lab's kubelet for `raven lab up --image`: the compiled agent DaemonSets and controller
 * Deployment, run as `runc` containers of the image, in the network namespace a cluster would give
 * them (an agent's node with hostNetwork; a namespace of its own for each controller replica).
 *
 * What the kubelet would provide, the lab provides: each node's hostPath volumes are directories of
 * that node (every lab node is its own host; only /lib/modules is this machine's), ConfigMaps and
 * Secrets are files written from what the lab created in its API. The API itself is reached at
 * 127.0.0.1:6443 inside each pod's network namespace, forwarded by socat to the lab's API server's
 * Unix socket (as OpenYurt's yurthub serves it on a node's loopback), with a kubeconfig in
 * place of the service account token, since the lab's API speaks plain HTTP.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type * as k8s from '@kubernetes/client-node';
import type { CommandRunner } from '../platform/command-runner.js';
import { mustRun } from '../platform/command-runner.js';
import { agentMounts, placesOn } from '../compiler/agent-mounts.js';
import { Runc } from './containers.js';
import { capabilitiesOf, containerSpec, ManifestError, type OciMount, type Placement } from './oci-spec.js';
import { AGENT_CONFIG } from '../contract/agent-config.js';
import type { LabNode } from './layout.js';
import type { LabRecord, LabState } from './state.js';

/** The API's address inside every pod's network namespace. */
export const POD_API_PORT = 6443;
const POD_KUBECONFIG = '/var/run/secrets/raven-lab/kubeconfig';
/** hostPath volumes that are this machine's (read-only in the manifests), not a lab node's own. */
const SHARED_HOST_PATHS = new Set(['/lib/modules']);
/** socat address syntax splits on ':' and ','; the lab's own paths never hold them. */
const SOCAT_SAFE = /^\/[A-Za-z0-9._/-]+$/;

export function apiSocket(state: LabState): string {
  return join(state.dir, 'api.sock');
}

export function runcOf(state: LabState, runner: CommandRunner): Runc {
  return new Runc(join(state.dir, 'runc'), runner);
}

/** Starts the forwarder from 127.0.0.1:6443 in `netns` to the lab API's socket, once per namespace. */
async function ensureApiForwarder(state: LabState, netns: string): Promise<void> {
  const what = `fwd-${netns}`;
  if (state.livePid(what)) return;
  const socket = apiSocket(state);
  if (!SOCAT_SAFE.test(socket)) throw new Error(`the lab directory ${state.dir} must be a plain path (letters, digits, . _ - /) for --image`);
  const out = openSync(state.log(what), 'a');
  const child = spawn('ip', ['netns', 'exec', netns, 'socat', `TCP-LISTEN:${POD_API_PORT},bind=127.0.0.1,reuseaddr,fork`, `UNIX-CONNECT:${socket}`], { detached: true, stdio: ['ignore', out, out] });
  child.unref();
  state.writePid(what, child.pid!);
}

function baseEnv(state: LabState): string[] {
  return [`KUBECONFIG=${POD_KUBECONFIG}`, `RAVEN_LAB_DIR=${state.dir}`];
}

/** The kubeconfig the control plane wrote for pods (`state.podKubeconfig`). */
function kubeconfigMount(state: LabState): OciMount {
  return { destination: POD_KUBECONFIG, type: 'bind', source: state.podKubeconfig, options: ['bind', 'ro'] };
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new ManifestError(what);
  return value;
}

/** The image the lab was brought up with. */
function imageOf(record: LabRecord): NonNullable<LabRecord['image']> {
  return required(record.image, 'this lab was not brought up with --image');
}

/**
 * Runs the agent of `node` as the compiled DaemonSet placed on it would: its container, in the
 * node's network namespace. Records the container's first process as `agent-<node>`.
 */
export async function startAgentPod(state: LabState, record: LabRecord, node: LabNode, runner: CommandRunner): Promise<void> {
  const objects = state.objects();
  const sets = objects.filter((o): o is k8s.V1DaemonSet => o.kind === 'DaemonSet').filter((ds) => placesOn(ds, node.name));
  if (sets.length !== 1) throw new ManifestError(`node ${node.name}: ${sets.length} agent DaemonSets would run there, not one`);
  const ds = sets[0]!;
  const pod = required(ds.spec?.template.spec, `DaemonSet ${ds.metadata?.name} has no pod template`);
  const { psk, proxySecret } = agentMounts(objects, node.name);
  const nodeDir = state.nodeDir(node.name);
  const volumeDir = (v: k8s.V1Volume): string | undefined => {
    if (v.configMap?.name === AGENT_CONFIG) return join(nodeDir, 'config');
    if (v.secret && psk && v.secret.secretName === psk.name) return secretFiles(join(nodeDir, 'secrets', v.name), v.secret, { [psk.key]: join(nodeDir, 'ipsec', 'psk') });
    if (v.secret && v.secret.secretName === proxySecret) return existsSync(join(nodeDir, 'proxy-certs')) ? join(nodeDir, 'proxy-certs') : undefined;
    if (v.hostPath) return hostPath(nodeDir, v.hostPath);
    if (v.emptyDir) return emptyDir(join(nodeDir, 'pods', 'agent'), v.name);
    return undefined;
  };
  await ensureApiForwarder(state, node.netns);
  const id = `agent-${node.name}`;
  const placement: Placement = {
    podName: `${ds.metadata?.name}-${node.name}`,
    namespace: record.namespace,
    nodeName: node.name,
    hostIP: node.lanIP,
    netnsPath: `/var/run/netns/${node.netns}`,
    rootfs: imageOf(record).rootfs,
    cgroupsPath: `/${record.plan.prefix}-${id}`,
    volumeDir,
    extraEnv: baseEnv(state),
    extraMounts: [kubeconfigMount(state)],
    privilegedCapabilities: currentCapabilities(),
  };
  const spec = withName(`DaemonSet ${ds.metadata?.name}`, () => containerSpec(imageOf(record).config, pod, 'agent', placement));
  const pid = await runcOf(state, runner).run(id, join(state.dir, 'containers', id), spec, state.log(id));
  state.writePid(id, pid);
}

/**
 * Runs the compiled controller Deployment: `replicas` pods, each in a network namespace of its own
 * (`<prefix>-c<i>`, loopback only: the controller talks to the API and nothing else). Records each
 * as `controller-<i>`.
 */
export async function startControllerPods(state: LabState, record: LabRecord, runner: CommandRunner): Promise<number> {
  const deployment = state.objects().find((o): o is k8s.V1Deployment => o.kind === 'Deployment' && o.metadata?.name === 'raven-controller');
  const pod = required(deployment?.spec?.template.spec, 'the compiled output has no raven-controller Deployment');
  const replicas = deployment!.spec!.replicas ?? 1;
  for (let i = 0; i < replicas; i++) {
    const netns = `${record.plan.prefix}-c${i}`;
    await mustRun(runner, 'ip', ['netns', 'add', netns]);
    await mustRun(runner, 'ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    await ensureApiForwarder(state, netns);
    const id = `controller-${i}`;
    const podDir = join(state.dir, 'pods', id);
    const placement: Placement = {
      podName: `raven-controller-lab-${i}`,
      namespace: record.namespace,
      nodeName: record.plan.nodes[i % record.plan.nodes.length]!.name,
      hostIP: record.plan.nodes[i % record.plan.nodes.length]!.lanIP,
      netnsPath: `/var/run/netns/${netns}`,
      rootfs: imageOf(record).rootfs,
      cgroupsPath: `/${record.plan.prefix}-${id}`,
      volumeDir: (v) => (v.emptyDir ? emptyDir(podDir, v.name) : undefined),
      extraEnv: baseEnv(state),
      extraMounts: [kubeconfigMount(state)],
      privilegedCapabilities: currentCapabilities(),
    };
    const spec = withName('Deployment raven-controller', () => containerSpec(imageOf(record).config, pod, 'controller', placement));
    state.writePid(id, await runcOf(state, runner).run(id, join(state.dir, 'containers', id), spec, state.log(id)));
  }
  return replicas;
}

/** Removes every container of the lab (after its processes were stopped) with its cgroups. */
export async function deletePods(state: LabState, runner: CommandRunner): Promise<number> {
  const runc = runcOf(state, runner);
  const ids = await runc.list();
  for (const id of ids) await runc.delete(id);
  return ids.length;
}

/** The capabilities this process may pass on (its bounding set). */
function currentCapabilities(): string[] {
  const mask = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  if (!mask) throw new Error('failed to read the capability bounding set from /proc/self/status');
  return capabilitiesOf(mask);
}

function withName<T>(what: string, f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (err instanceof ManifestError) throw new ManifestError(`${what}: ${err.message}`);
    throw err;
  }
}

/** A Secret volume as the kubelet writes it: each key (or each `items` entry) a file. `files` maps keys to where the lab keeps the value. */
function secretFiles(dir: string, secret: k8s.V1SecretVolumeSource, files: Readonly<Record<string, string>>): string | undefined {
  const items: k8s.V1KeyToPath[] = secret.items ?? Object.keys(files).map((key) => ({ key, path: key }));
  if (!items.every((i) => existsSync(files[i.key] ?? '/nonexistent'))) return undefined;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const i of items) {
    if (!/^[A-Za-z0-9._-]+$/.test(i.path)) throw new ManifestError(`Secret ${secret.secretName}: item path "${i.path}" must be a plain file name`);
    writeFileSync(join(dir, i.path), readFileSync(files[i.key]!), { mode: i.mode ?? secret.defaultMode ?? 0o644 });
  }
  return dir;
}

function hostPath(nodeDir: string, v: k8s.V1HostPathVolumeSource): string {
  if (!v.path.startsWith('/') || v.path.split('/').includes('..')) throw new ManifestError(`hostPath "${v.path}" must be an absolute path`);
  // This machine's, where it has it (a container without kernel modules has an empty directory).
  if (SHARED_HOST_PATHS.has(v.path) && existsSync(v.path)) return v.path;
  const dir = join(nodeDir, 'host', v.path);
  mkdirSync(dir, { recursive: true });
  return dir;
}

function emptyDir(podDir: string, name: string): string {
  const dir = join(podDir, 'empty', name);
  mkdirSync(dir, { recursive: true });
  return dir;
}
