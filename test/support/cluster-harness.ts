/**
 * A small cluster for controller tests: the embedded API server seeded with the seed topology's
 * compiled CRD, Gateways and raven-cfg, five Nodes, and helpers to play the agents (heartbeat
 * Leases) and to run real `raven controller` processes against it.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { parse } from 'yaml';
import { type ApiServer, loadCrds, startApiServer } from '../../src/testkit/apiserver/index.ts';
import { type AgentHealth, encodeHealth, HEALTH_ANNOTATION, leaseName } from '../../src/contract/heartbeat.ts';
import type { Gateway } from '../../src/contract/gateway.ts';

export const NS = 'raven-system';
export const NODES: Record<string, { ip: string; cidr: string; labels?: Record<string, string> }> = {
  'cloud-gw-1': { ip: '10.0.0.10', cidr: '10.244.0.0/24', labels: { 'apps.openyurt.io/nodepool': 'cloud' } },
  'hz-1': { ip: '192.168.1.11', cidr: '10.244.1.0/24' },
  'hz-2': { ip: '192.168.1.12', cidr: '10.244.2.0/24' },
  'qd-1': { ip: '192.168.1.11', cidr: '10.244.3.0/24' },
  'qd-2': { ip: '192.168.1.12', cidr: '10.244.4.0/24' },
};

export interface Cluster {
  api: ApiServer;
  kc: k8s.KubeConfig;
  kubeconfigFile: string;
  objects: k8s.KubernetesObjectApi;
  custom: k8s.CustomObjectsApi;
  core: k8s.CoreV1Api;
  coordination: k8s.CoordinationV1Api;
  gateway(name: string): Promise<Gateway>;
  /** Writes (or renews) the heartbeat Lease of `node` as its agent would. */
  beat(node: string, health?: Partial<AgentHealth>, renewTime?: number): Promise<void>;
  close(): Promise<void>;
}

const yamlObjects = (file: string): k8s.KubernetesObject[] => [parse(readFileSync(file, 'utf8'))];

/** Calico's BlockAffinity CRD, reduced to what the controller reads. */
export const BLOCK_AFFINITY_CRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'blockaffinities.crd.projectcalico.org' },
  spec: {
    group: 'crd.projectcalico.org',
    names: { kind: 'BlockAffinity', listKind: 'BlockAffinityList', plural: 'blockaffinities', singular: 'blockaffinity' },
    scope: 'Cluster',
    versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', properties: { node: { type: 'string' }, cidr: { type: 'string' }, state: { type: 'string' } } } } } } }],
  },
};

export async function startCluster(): Promise<Cluster> {
  const api = await startApiServer({ crds: [...loadCrds(['dist/seed/crds']), BLOCK_AFFINITY_CRD] });
  const kc = new k8s.KubeConfig();
  kc.loadFromString(api.kubeconfigYaml());
  const dir = mkdtempSync(join(tmpdir(), 'raven-cluster-'));
  const kubeconfigFile = join(dir, 'kubeconfig');
  writeFileSync(kubeconfigFile, api.kubeconfigYaml());
  const objects = k8s.KubernetesObjectApi.makeApiClient(kc);
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const coordination = kc.makeApiClient(k8s.CoordinationV1Api);

  const seed = [
    ...yamlObjects('dist/seed/runtime/namespace-raven-system.yaml'),
    ...yamlObjects('dist/seed/runtime/configmap-raven-cfg.yaml'),
    ...['cloud', 'hangzhou', 'qingdao'].flatMap((r) => yamlObjects(`dist/seed/gateways/gateway-gw-${r}.yaml`)),
  ];
  for (const o of seed) await objects.create(o);
  for (const [name, n] of Object.entries(NODES)) {
    await core.createNode({
      body: {
        metadata: { name, labels: { 'kubernetes.io/hostname': name, ...(n.labels ?? {}) } },
        spec: { podCIDR: n.cidr, podCIDRs: [n.cidr] },
        status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: n.ip }, { type: 'Hostname', address: name }] },
      },
    });
    // Node status is a subresource: set it explicitly, as the kubelet would.
    await core.replaceNodeStatus({ name, body: { metadata: { name }, status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: n.ip }] } } as k8s.V1Node });
  }

  const beat = async (node: string, health: Partial<AgentHealth> = {}, renewTime = Date.now()): Promise<void> => {
    const annotations = { [HEALTH_ANNOTATION]: encodeHealth({ backendUp: true, peers: {}, ...health }) };
    const spec = { holderIdentity: node, leaseDurationSeconds: 2, renewTime: new k8s.V1MicroTime(renewTime) };
    try {
      const lease = await coordination.readNamespacedLease({ name: leaseName(node), namespace: NS });
      await coordination.replaceNamespacedLease({ name: leaseName(node), namespace: NS, body: { ...lease, metadata: { ...lease.metadata, annotations }, spec: { ...lease.spec, ...spec } } });
    } catch (err) {
      if ((err as { code?: number }).code !== 404) throw err;
      await coordination.createNamespacedLease({ namespace: NS, body: { metadata: { name: leaseName(node), namespace: NS, annotations }, spec } });
    }
  };

  return {
    api,
    kc,
    kubeconfigFile,
    objects,
    custom,
    core,
    coordination,
    gateway: async (name) => (await custom.getClusterCustomObject({ group: 'raven.openyurt.io', version: 'v1beta1', plural: 'gateways', name })) as Gateway,
    beat,
    close: async () => {
      await api.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ControllerProcess {
  proc: ChildProcess;
  port: number;
  logs(): string;
  metrics(): Promise<string>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `raven controller` as a real process; resolves once it serves /healthz. */
export async function startController(kubeconfigFile: string, extra: string[] = []): Promise<ControllerProcess> {
  const proc = spawn(process.execPath, ['bin/raven.mjs', 'controller', '--kubeconfig', kubeconfigFile, '--namespace', NS, '--http-addr', '127.0.0.1:0', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const port = await waitFor(() => Number(/serving health and metrics port=(\d+)/.exec(out)?.[1]) || undefined, 15_000, () => `controller to start; output:\n${out}`);
  return {
    proc,
    port,
    logs: () => out,
    metrics: async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text(),
    kill: async (signal = 'SIGTERM') => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill(signal);
      await exited;
    },
  };
}

/** Polls `f` until it returns a value other than undefined/false, or fails with what was awaited. */
export async function waitFor<T>(f: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, what: string | (() => string)): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}${last ? ` (last error: ${(last as Error).message})` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export const activeOf = (gw: Gateway): string[] => (gw.status?.activeEndpoints ?? []).map((e) => `${e.type}/${e.nodeName}`).sort();

/** Counter value from Prometheus text, 0 when absent. */
export function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(series.length + 1)) : 0;
}
