/**
 * The lab's control plane, one background process (`raven lab serve`): the embedded Kubernetes API
 * seeded with the compiled objects, the Nodes of the plan and (IPsec) the PSK Secret; then the real
 * `raven controller` as a child process. Writes ready.json when all of that is up; on SIGTERM it
 * stops the controller, then the API server.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import { startApiServer } from '../testkit/apiserver/index.js';
import { createLogger } from '../platform/log.js';
import { runUntilSignal } from '../platform/run-until-signal.js';
import { ravenCommand } from '../platform/raven-command.js';
import { pskSecretRef } from '../compiler/agent-mounts.js';
import { apiSocket, POD_API_PORT } from './pods.js';
import type { LabState } from './state.js';

/** Node objects for the plan, as a kubelet would register them (Ready, InternalIP, pod ranges). */
function nodeObjects(record: ReturnType<LabState['read']>): k8s.V1Node[] {
  return record.plan.nodes.map((n) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name, 'raven-gitops.io/lab': record.plan.name, ...n.labels } },
    spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR] },
    status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: n.lanIP }, { type: 'Hostname', address: n.name }] },
  }));
}

export async function serveLab(state: LabState): Promise<void> {
  const log = createLogger(`lab/${state.name}`);
  const record = state.read();
  const objects = state.objects();
  const crds = objects.filter((o) => o.kind === 'CustomResourceDefinition');
  const api = await startApiServer({ crds });
  try {
    await seed(state, record, objects, api.kubeconfigYaml());
  } catch (err) {
    await api.close();
    throw err;
  }
  writeFileSync(state.kubeconfig, api.kubeconfigYaml({ name: `raven-lab-${state.name}`, namespace: record.namespace }), { mode: 0o600 });
  // With --image, `lab up` runs the controller Deployment's pods; they reach the API through its socket.
  if (record.image) writeFileSync(state.podKubeconfig, api.kubeconfigYaml({ name: `raven-lab-${state.name}`, namespace: record.namespace, server: `http://127.0.0.1:${POD_API_PORT}` }), { mode: 0o644 });
  const socket = record.image ? await serveSocket(apiSocket(state), api.port) : undefined;
  const controller = record.image ? undefined : startController(state, record.namespace);
  writeFileSync(state.readyFile, JSON.stringify({ apiUrl: api.url, pid: process.pid, controllerPid: controller?.pid }) + '\n');
  log.info('lab control plane up', { api: api.url, controller: controller?.pid ?? 'from the image' });
  controller?.on('exit', (code, signal) => log.warn('controller exited', { code: code ?? '', signal: signal ?? '' }));
  await runUntilSignal(async () => {
    if (controller && controller.exitCode === null && controller.signalCode === null) {
      const exited = new Promise((r) => controller.once('exit', r));
      controller.kill('SIGTERM');
      await exited;
    }
    socket?.close();
    await api.close();
  }, log, 'stopping the lab control plane');
}

/** The controller as a process of this machine, talking to the API by the lab's kubeconfig. */
function startController(state: LabState, namespace: string): ChildProcess {
  const out = openSync(state.log('controller'), 'a');
  const [cmd, entry] = ravenCommand();
  const controller = spawn(cmd, [entry, 'controller', '--kubeconfig', state.kubeconfig, '--namespace', namespace, '--http-addr', '127.0.0.1:0'], {
    stdio: ['ignore', out, out],
    env: { ...process.env, RAVEN_LAB_DIR: state.dir },
  });
  state.writePid('controller', controller.pid!);
  return controller;
}

/** The API's TCP port, also on a Unix socket: a path reaches across network namespaces, a port does not. */
async function serveSocket(path: string, port: number): Promise<Server> {
  rmSync(path, { force: true });
  const server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(path, () => resolve()));
  chmodSync(path, 0o600);
  return server;
}

/** The compiled objects (namespaces first), the Nodes as kubelets would register them, and (IPsec) the PSK Secret. */
async function seed(state: LabState, record: ReturnType<LabState['read']>, objects: readonly k8s.KubernetesObject[], kubeconfig: string): Promise<void> {
  const kc = new k8s.KubeConfig();
  kc.loadFromString(kubeconfig);
  const client = k8s.KubernetesObjectApi.makeApiClient(kc);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  for (const o of [...objects.filter((o) => o.kind === 'Namespace'), ...objects.filter((o) => o.kind !== 'Namespace' && o.kind !== 'CustomResourceDefinition')]) {
    await client.create(o);
  }
  for (const node of nodeObjects(record)) {
    await core.createNode({ body: node });
    await core.replaceNodeStatus({ name: node.metadata!.name!, body: node });
  }
  if (record.backend === 'ipsec') {
    const ref = pskSecretRef(objects);
    const psk = readFileSync(state.pskFile, 'utf8');
    await core.createNamespacedSecret({ namespace: record.namespace, body: { metadata: { name: ref.name, namespace: record.namespace }, stringData: { [ref.key]: psk } } });
  }
}

