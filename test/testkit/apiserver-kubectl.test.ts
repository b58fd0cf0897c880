/**
 * Embedded API server with the real kubectl: apply (client- and server-side) of the seed bundle,
 * get with server-side printing and short names, patch, delete, get -w. Skipped, with a warning,
 * when kubectl is not installed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { parse } from 'yaml';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SEED, startLab, waitFor, type Lab } from '../support/apiserver-support.ts';

const KUBECTL = process.env.KUBECTL ?? 'kubectl';
const found = spawnSync(KUBECTL, ['version', '--client'], { encoding: 'utf8' });
const haveKubectl = !found.error && found.status === 0;

let lab: Lab;
let dir: string;
let kubeconfig: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs kubectl asynchronously (the server lives in this process, so spawnSync would deadlock). */
function kubectl(...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(KUBECTL, ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args], { env: { ...process.env, HOME: dir, KUBECONFIG: '' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

async function ok(...args: string[]): Promise<string> {
  const r = await kubectl(...args);
  assert.is(r.code, 0, `kubectl ${args.join(' ')} failed:\n${r.stderr}`);
  return r.stdout;
}

const suite = haveKubectl ? test : (_name: string, _fn: () => unknown) => undefined;
if (!haveKubectl) console.warn(`WARNING: ${KUBECTL} not found (${found.error?.message ?? found.stderr}); skipping the kubectl tests of the embedded API server`);

test.before(async () => {
  if (!haveKubectl) return;
  lab = await startLab();
  dir = mkdtempSync(join(tmpdir(), 'raven-kubectl-'));
  kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, lab.api.kubeconfigYaml());
});
test.after(async () => {
  if (!haveKubectl) return;
  await lab.api.close();
  rmSync(dir, { recursive: true, force: true });
});

suite('kubectl apply -f dist/seed/crds/ creates the CRD; only kustomization.yaml is refused, as by kube-apiserver', async () => {
  const r = await kubectl('apply', '-f', `${SEED}/crds/`);
  assert.match(r.stdout, 'customresourcedefinition.apiextensions.k8s.io/gateways.raven.openyurt.io created');
  // kubectl reads every YAML file of the directory; no API server serves kustomize.config.k8s.io.
  assert.is(r.code, 1);
  const errors = r.stderr.trim().split('\n').filter((l) => l.startsWith('error'));
  assert.equal(errors, [`error: resource mapping not found for name: "" namespace: "" from "${SEED}/crds/kustomization.yaml": no matches for kind "Kustomization" in version "kustomize.config.k8s.io/v1beta1"`]);
  const resources = await ok('api-resources', '--api-group=raven.openyurt.io', '--no-headers');
  assert.match(resources, /^gateways\s+gw\s+raven\.openyurt\.io\/v1beta1\s+false\s+Gateway/m);
  assert.match(await ok('get', 'crd'), /gateways\.raven\.openyurt\.io\s+\d{4}-\d\d-\d\dT/);
});

suite('kubectl apply -f dist/seed/gateways/ (cluster-scoped custom resources), get gateways, get gw -o yaml', async () => {
  const r = await kubectl('apply', '-f', `${SEED}/gateways/`);
  for (const g of ['gw-cloud', 'gw-hangzhou', 'gw-qingdao']) assert.match(r.stdout, `gateway.raven.openyurt.io/${g} created`);
  const table = (await ok('get', 'gateways')).trim().split('\n');
  assert.match(table[0]!, /^NAME\s+EXPOSURE\s+TUNNEL\s+PROXY\s+AGE$/);
  assert.match(table[1]!, /^gw-cloud\s+PublicIP\s+\d+s$/);
  assert.is(table.length, 4);
  const list = parse(await ok('get', 'gw', '-o', 'yaml'));
  assert.is(list.kind, 'List');
  assert.equal(list.items.map((i: any) => [i.kind, i.metadata.name, i.metadata.namespace]), [
    ['Gateway', 'gw-cloud', undefined],
    ['Gateway', 'gw-hangzhou', undefined],
    ['Gateway', 'gw-qingdao', undefined],
  ]);
  const file = parse((await import('node:fs')).readFileSync(`${SEED}/gateways/gateway-gw-cloud.yaml`, 'utf8'));
  assert.equal(list.items[0].spec, file.spec);
  const again = await ok('apply', '-k', `${SEED}/gateways/`);
  assert.match(again, 'gateway.raven.openyurt.io/gw-cloud unchanged');
  assert.match(await ok('get', 'raven'), 'gw-hangzhou', 'CRD categories');
});

suite('kubectl apply validates custom resources on the server: unknown fields (strict), schema violations', async () => {
  const file = join(dir, 'bad-gateway.yaml');
  writeFileSync(file, 'apiVersion: raven.openyurt.io/v1beta1\nkind: Gateway\nmetadata:\n  name: gw-typo\nspec:\n  exposureType: PublicIP\n  tunnelConfig:\n    Replicas: 1\n');
  const strict = await kubectl('apply', '-f', file);
  assert.is(strict.code, 1);
  assert.match(strict.stderr, 'strict decoding error: unknown field "spec.exposureType"');
  const warn = await kubectl('apply', '--validate=warn', '-f', file);
  assert.is(warn.code, 0, warn.stderr);
  assert.match(warn.stderr, 'unknown field "spec.exposureType"');
  assert.equal(JSON.parse(await ok('get', 'gw', 'gw-typo', '-o', 'json')).spec, { tunnelConfig: { Replicas: 1 } }, 'pruned');
  writeFileSync(file, 'apiVersion: raven.openyurt.io/v1beta1\nkind: Gateway\nmetadata:\n  name: gw-typo\nspec:\n  tunnelConfig:\n    Replicas: 2\n');
  const invalid = await kubectl('apply', '-f', file);
  assert.is(invalid.code, 1);
  assert.match(invalid.stderr, 'The Gateway "gw-typo" is invalid: spec.tunnelConfig.Replicas: Invalid value: 2: spec.tunnelConfig.Replicas in body should be less than or equal to 1');
  await ok('delete', 'gw', 'gw-typo');
});

suite('kubectl apply of the namespace and ConfigMaps from dist/seed/runtime, then patch (merge, json, strategic) and delete', async () => {
  const out = await ok('apply', '-f', `${SEED}/runtime/namespace-raven-system.yaml`, '-f', `${SEED}/runtime/configmap-raven-cfg.yaml`, '-f', `${SEED}/runtime/configmap-raven-agent-config.yaml`);
  assert.match(out, 'namespace/raven-system created');
  assert.match(out, 'configmap/raven-cfg created');
  const cm = JSON.parse(await ok('get', 'cm', 'raven-cfg', '-n', 'raven-system', '-o', 'json'));
  assert.equal(cm.data, { 'enable-l3-tunnel': 'true', 'enable-l7-proxy': 'true' });
  assert.match(await ok('patch', 'cm', 'raven-cfg', '-n', 'raven-system', '--type', 'merge', '-p', '{"data":{"enable-l7-proxy":"false"}}'), 'configmap/raven-cfg patched');
  await ok('patch', 'cm', 'raven-cfg', '-n', 'raven-system', '--type', 'json', '-p', '[{"op":"remove","path":"/data/enable-l3-tunnel"},{"op":"add","path":"/data/extra","value":"1"}]');
  await ok('patch', 'cm', 'raven-cfg', '-n', 'raven-system', '-p', '{"data":{"strategic":"yes"}}');
  const patched = JSON.parse(await ok('get', 'cm', 'raven-cfg', '-n', 'raven-system', '-o', 'json'));
  assert.equal(patched.data, { 'enable-l7-proxy': 'false', extra: '1', strategic: 'yes' });
  const failed = await kubectl('patch', 'cm', 'raven-cfg', '-n', 'raven-system', '--type', 'json', '-p', '[{"op":"test","path":"/data/extra","value":"2"}]');
  assert.is(failed.code, 1);
  assert.match(failed.stderr, 'testing value /data/extra failed');
  const cr = await kubectl('patch', 'gw', 'gw-cloud', '-p', '{"spec":{"exposeType":""}}');
  assert.is(cr.code, 1, 'strategic merge patch is refused for custom resources');
  assert.match(cr.stderr, 'strategic');
  // A re-apply restores what the file says and keeps what it never set.
  await ok('apply', '-f', `${SEED}/runtime/configmap-raven-cfg.yaml`);
  const reapplied = JSON.parse(await ok('get', 'cm', 'raven-cfg', '-n', 'raven-system', '-o', 'json'));
  assert.equal(reapplied.data, { 'enable-l3-tunnel': 'true', 'enable-l7-proxy': 'true', extra: '1', strategic: 'yes' });
  assert.match(await ok('delete', 'cm', 'raven-agent-config', '-n', 'raven-system'), 'configmap "raven-agent-config" deleted');
  const gone = await kubectl('get', 'cm', 'raven-agent-config', '-n', 'raven-system');
  assert.is(gone.code, 1);
  assert.match(gone.stderr, 'Error from server (NotFound): configmaps "raven-agent-config" not found');
});

suite('kubectl patch --subresource=status changes only status; kubectl apply keeps it', async () => {
  await ok('patch', 'gw', 'gw-cloud', '--subresource=status', '--type', 'merge', '-p', '{"status":{"activeEndpoints":[{"nodeName":"cloud-gw-1","type":"tunnel"}]},"spec":{"exposeType":"LoadBalancer"}}');
  assert.match(await ok('get', 'gw', 'gw-cloud'), /gw-cloud\s+PublicIP\s+cloud-gw-1\s+\d+s/);
  await ok('apply', '-f', `${SEED}/gateways/gateway-gw-cloud.yaml`);
  const gw = JSON.parse(await ok('get', 'gw', 'gw-cloud', '-o', 'json'));
  assert.equal(gw.status.activeEndpoints, [{ nodeName: 'cloud-gw-1', type: 'tunnel' }]);
});

suite('kubectl get -w shows changes another client makes', async () => {
  let child: ChildProcess | undefined;
  try {
    let out = '';
    child = spawn(KUBECTL, ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), 'get', 'cm', '-n', 'raven-system', '-w', '--output-watch-events'], { env: { ...process.env, HOME: dir, KUBECONFIG: '' } });
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    await waitFor('initial listing', () => out.includes('raven-cfg'), 10_000);
    await waitFor('watch open', () => lab.api.openWatches() > 0, 10_000);
    const merge = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
    await lab.core.createNamespacedConfigMap({ namespace: 'raven-system', body: { metadata: { name: 'from-node' }, data: { a: '1' } } });
    await lab.core.patchNamespacedConfigMap({ name: 'from-node', namespace: 'raven-system', body: { data: { b: '2' } } }, merge);
    await lab.core.deleteNamespacedConfigMap({ name: 'from-node', namespace: 'raven-system' });
    await waitFor('deletion printed', () => /DELETED\s+from-node/.test(out), 10_000);
    const lines = out.trim().split('\n');
    assert.match(lines[0]!, /^EVENT\s+NAME\s+DATA\s+AGE$/);
    assert.equal(lines.filter((l) => l.includes('from-node')).map((l) => l.split(/\s+/).slice(0, 3).join(' ')), ['ADDED from-node 1', 'MODIFIED from-node 2', 'DELETED from-node 2']);
  } finally {
    child?.kill();
  }
});

suite('kubectl apply --server-side: Apply manager, conflicts with other writers, --force-conflicts', async () => {
  const out = await ok('apply', '--server-side', '-f', `${SEED}/gateways/gateway-gw-hangzhou.yaml`);
  assert.match(out, 'gateway.raven.openyurt.io/gw-hangzhou serverside-applied');
  const gw = JSON.parse(await ok('get', 'gw', 'gw-hangzhou', '-o', 'json', '--show-managed-fields'));
  assert.ok(gw.metadata.managedFields.some((m: any) => m.manager === 'kubectl' && m.operation === 'Apply'), JSON.stringify(gw.metadata.managedFields));
  // Another writer changes a field the file sets (and one it does not: no conflict there).
  await ok('patch', 'gw', 'gw-hangzhou', '--type', 'merge', '-p', '{"spec":{"tunnelConfig":{"Replicas":0},"exposeType":"LoadBalancer"}}');
  const conflict = await kubectl('apply', '--server-side', '-f', `${SEED}/gateways/gateway-gw-hangzhou.yaml`);
  assert.is(conflict.code, 1);
  assert.match(conflict.stderr, 'Apply failed with 1 conflict: conflict with "kubectl-patch" using raven.openyurt.io/v1beta1: .spec.tunnelConfig.Replicas');
  await ok('apply', '--server-side', '--force-conflicts', '-f', `${SEED}/gateways/gateway-gw-hangzhou.yaml`);
  const spec = JSON.parse(await ok('get', 'gw', 'gw-hangzhou', '-o', 'json')).spec;
  assert.equal([spec.tunnelConfig.Replicas, spec.exposeType], [1, 'LoadBalancer']);
  // Fresh object through server-side apply, and the dry run leaves nothing behind.
  await ok('delete', 'gw', 'gw-qingdao');
  assert.match(await ok('apply', '--server-side', '--dry-run=server', '-f', `${SEED}/gateways/gateway-gw-qingdao.yaml`), 'serverside-applied (server dry run)');
  assert.is((await kubectl('get', 'gw', 'gw-qingdao')).code, 1);
  await ok('apply', '--server-side', '-f', `${SEED}/gateways/gateway-gw-qingdao.yaml`);
  assert.is(JSON.parse(await ok('get', 'gw', 'gw-qingdao', '-o', 'json')).metadata.generation, 1);
});

suite('kubectl delete -f of the CRD removes the Gateways and the resource type', async () => {
  assert.match(await ok('delete', '-f', `${SEED}/crds/customresourcedefinition-gateways.raven.openyurt.io.yaml`), 'deleted');
  const r = await kubectl('get', 'gw');
  assert.is(r.code, 1);
  // With kubectl's discovery cache still listing gateways the list itself is a 404; with a fresh cache the type is unknown.
  assert.match(r.stderr, /the server doesn't have a resource type "gw"|Unable to list "raven\.openyurt\.io\/v1beta1, Resource=gateways": the server could not find the requested resource/);
  const fresh = await kubectl('get', 'gw', '--cache-dir', join(dir, 'cache-fresh'));
  assert.match(fresh.stderr, `the server doesn't have a resource type "gw"`);
});

test.run();
