/**
 * A lab's state directory (`<run-dir>/<name>/`, default run dir /run/raven-lab): what `up` decided,
 * the compiled objects, the kubeconfig, every process's PID and log, and each node's agent config
 * and state. Every later command (check, fail, restore, down) works from it alone.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { Gateway } from '../contract/gateway.js';
import { parseAllDocuments } from 'yaml';
import { isAlive, signal, stopOwnedProcess } from '../platform/owned-process.js';
import type { ImageConfig } from './oci-spec.js';
import type { LabPlan } from './layout.js';

export const DEFAULT_RUN_DIR = '/run/raven-lab';

export interface LabRecord {
  readonly plan: LabPlan;
  readonly topologyFile: string;
  readonly cluster: string;
  readonly namespace: string;
  readonly backend: 'wireguard' | 'ipsec';
  readonly forwardNodeIP: boolean;
  readonly natTraversal: boolean;
  readonly l3Tunnel: boolean;
  readonly createdAt: string;
  /** Set when the lab runs the controller and agents from a container image (`lab up --image`). */
  readonly image?: {
    readonly archive: string;
    readonly ref: string;
    readonly digest: string;
    readonly rootfs: string;
    readonly config: ImageConfig;
  };
}

/**
 * What `raven lab fail NODE --what` breaks: `node` a power cut (agent and tunnel killed, every port
 * down), `agent` the agent process alone, `tunnel` its tunnel daemon alone, `wan` its uplink, and
 * `udp-block` the tunnel's UDP port (nftables in the node).
 */
export const NODE_FAULTS = ['node', 'agent', 'tunnel', 'wan', 'udp-block'] as const;
export type NodeFault = (typeof NODE_FAULTS)[number];

/** What `fail` did to a node, recorded so that `restore` undoes exactly that and `down` knows of it. */
export type NodeFaultRecord = { readonly node: string; readonly at: string } & (
  | { readonly what: 'node' | 'agent' }
  | { readonly what: 'tunnel'; readonly killed: readonly { readonly pid: number; readonly name: string }[] }
  /** The switch port set down: the node's own WAN port, or its region's NAT router uplink (`region`). */
  | { readonly what: 'wan'; readonly port: string; readonly publicIP: string; readonly region?: string }
  | { readonly what: 'udp-block'; readonly port: number }
);

/** `fail --wan-loss REGION=PCT`: nftables drops PCT % of the region's WAN packets, both ways, on these hosts. */
export interface WanLossFaultRecord {
  readonly what: 'wan-loss';
  readonly region: string;
  readonly percent: number;
  /** The namespaces holding the rules: the region's NAT router, or each of its public hosts. */
  readonly netns: readonly string[];
  readonly at: string;
}

/** `fail --api`: the control plane process stopped (SIGSTOP) until `until`, and the Gateways as they were. */
export interface ApiFaultRecord {
  readonly what: 'api';
  readonly pid: number;
  readonly at: string;
  readonly until: string;
  readonly gateways: readonly Gateway[];
}

export class LabState {
  readonly dir: string;

  constructor(runDir: string, readonly name: string) {
    this.dir = join(runDir, name);
  }

  get recordFile(): string {
    return join(this.dir, 'lab.json');
  }
  get kubeconfig(): string {
    return join(this.dir, 'kubeconfig');
  }
  get objectsFile(): string {
    return join(this.dir, 'objects.yaml');
  }
  /** The compiled objects `up` created in the lab's API (objects.yaml). */
  objects(): KubernetesObject[] {
    return parseAllDocuments(readFileSync(this.objectsFile, 'utf8')).map((d) => d.toJS() as KubernetesObject);
  }
  /** The kubeconfig mounted into `--image` pods: the API at 127.0.0.1:6443 of their own namespace. */
  get podKubeconfig(): string {
    return join(this.dir, 'pod-kubeconfig');
  }
  get pskFile(): string {
    return join(this.dir, 'psk');
  }
  /** Written by the supervisor once the API server is seeded and the controller started. */
  get readyFile(): string {
    return join(this.dir, 'ready.json');
  }
  log(what: string): string {
    return join(this.dir, 'logs', `${what}.log`);
  }
  pidFile(what: string): string {
    return join(this.dir, 'pids', `${what}.pid`);
  }
  nodeDir(node: string): string {
    return join(this.dir, 'nodes', node);
  }
  /** Where the faults `fail` injected are recorded (`<node>.<what>.json`, `api.json`). */
  get faultsDir(): string {
    return join(this.dir, 'faults');
  }
  private faultFile(node: string, what: NodeFault): string {
    return join(this.faultsDir, `${node}.${what}.json`);
  }
  private get apiFaultFile(): string {
    return join(this.faultsDir, 'api.json');
  }

  /** Every node fault recorded, sorted by node, then kind. */
  nodeFaults(): NodeFaultRecord[] {
    if (!existsSync(this.faultsDir)) return [];
    return readdirSync(this.faultsDir)
      .filter((f) => f.endsWith('.json') && f !== 'api.json' && !f.startsWith('wan-loss-'))
      .sort()
      .map((f) => JSON.parse(readFileSync(join(this.faultsDir, f), 'utf8')) as NodeFaultRecord);
  }
  nodeFault(node: string, what: NodeFault): NodeFaultRecord | undefined {
    return this.nodeFaults().find((f) => f.node === node && f.what === what);
  }
  recordFault(f: NodeFaultRecord | ApiFaultRecord | WanLossFaultRecord): void {
    mkdirSync(this.faultsDir, { recursive: true, mode: 0o700 });
    const file = f.what === 'api' ? this.apiFaultFile : f.what === 'wan-loss' ? this.wanLossFile(f.region) : this.faultFile(f.node, f.what);
    writeFileSync(file, JSON.stringify(f, null, 2) + '\n');
  }
  private wanLossFile(region: string): string {
    return join(this.faultsDir, `wan-loss-${region}.json`);
  }
  /** Every WAN loss injected, by region. */
  wanLossFaults(): WanLossFaultRecord[] {
    if (!existsSync(this.faultsDir)) return [];
    return readdirSync(this.faultsDir)
      .filter((f) => f.startsWith('wan-loss-') && f.endsWith('.json'))
      .sort()
      .map((f) => JSON.parse(readFileSync(join(this.faultsDir, f), 'utf8')) as WanLossFaultRecord);
  }
  forgetWanLoss(region: string): void {
    rmSync(this.wanLossFile(region), { force: true });
  }
  forgetFault(node: string, what: NodeFault): void {
    rmSync(this.faultFile(node, what), { force: true });
  }
  apiFault(): ApiFaultRecord | undefined {
    return existsSync(this.apiFaultFile) ? (JSON.parse(readFileSync(this.apiFaultFile, 'utf8')) as ApiFaultRecord) : undefined;
  }
  forgetApiFault(): void {
    rmSync(this.apiFaultFile, { force: true });
  }

  exists(): boolean {
    return existsSync(this.recordFile);
  }

  create(record: LabRecord): void {
    for (const d of ['logs', 'pids', 'nodes', 'faults']) mkdirSync(join(this.dir, d), { recursive: true, mode: 0o700 });
    writeFileSync(this.recordFile, JSON.stringify(record, null, 2) + '\n');
  }

  read(): LabRecord {
    if (!this.exists()) throw new Error(`no lab "${this.name}" is up (no ${this.recordFile})`);
    return JSON.parse(readFileSync(this.recordFile, 'utf8')) as LabRecord;
  }

  writePid(what: string, pid: number): void {
    writeFileSync(this.pidFile(what), String(pid));
  }

  /** The recorded PID of `what` if that process is alive and still ours (its command line names this lab). */
  livePid(what: string): number | undefined {
    const f = this.pidFile(what);
    if (!existsSync(f)) return undefined;
    const pid = Number(readFileSync(f, 'utf8'));
    return pid > 0 && this.owns(pid) ? pid : undefined;
  }

  /** Ours: alive, and started with this lab's state directory on its command line or in its environment. */
  owns(pid: number): boolean {
    try {
      if (!isAlive(pid)) return false;
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const env = readFileSync(`/proc/${pid}/environ`, 'utf8');
      return argv.includes(this.dir) || env.includes(this.dir);
    } catch {
      return false;
    }
  }

  /** Stops the recorded process (SIGTERM, then SIGKILL after `graceMs`) and forgets it. */
  async stop(what: string, graceMs: number, how: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<boolean> {
    const pid = this.livePid(what);
    if (pid !== undefined) {
      if (how === 'SIGKILL') {
        signal(pid, 'SIGKILL');
        const end = Date.now() + 2000;
        while (isAlive(pid) && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      } else await stopOwnedProcess(pid, () => this.owns(pid), graceMs);
    }
    rmSync(this.pidFile(what), { force: true });
    return pid !== undefined;
  }

  /** Names of recorded processes (pid files). */
  recorded(): string[] {
    const d = join(this.dir, 'pids');
    return existsSync(d) ? readdirSync(d).filter((f) => f.endsWith('.pid')).map((f) => f.slice(0, -4)).sort() : [];
  }

  /**
   * PIDs of tunnel daemons (wireguard-go, charon) the node's agent recorded in its state directory,
   * that are alive and ours.
   */
  tunnelPids(node: string): number[] {
    const state = join(this.nodeDir(node), 'state');
    const files = [
      ...(existsSync(state) ? readdirSync(state).filter((f) => f.endsWith('.pid')).map((f) => join(state, f)) : []),
      join(state, 'ipsec', 'charon.pid'),
    ].filter((f) => existsSync(f));
    return files.map((f) => Number(readFileSync(f, 'utf8'))).filter((pid) => pid > 0 && this.owns(pid));
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Labs whose state directories exist under `runDir`. */
export function labsIn(runDir: string): string[] {
  if (!existsSync(runDir)) return [];
  return readdirSync(runDir).filter((n) => existsSync(join(runDir, n, 'lab.json'))).sort();
}
