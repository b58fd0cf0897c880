/**
 * Every generated object validates against the schema of whoever will read it: Gateways against
 * OpenYurt's own CRD (and ours), core objects against Kubernetes 1.27, Argo CD and Flux objects
 * against theirs. Plus the properties a cluster operator relies on.
 */
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Ajv, type ValidateFunction } from 'ajv';
import { parse } from 'yaml';
import * as core from 'kubernetes-models/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as rbac from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import * as apiext from 'kubernetes-models/apiextensions.k8s.io/v1';
import * as admission from 'kubernetes-models/admissionregistration.k8s.io/v1';
import * as argo from '@kubernetes-models/argo-cd/argoproj.io/v1alpha1';
import * as fluxSource from '@kubernetes-models/flux-cd/source.toolkit.fluxcd.io/v1';
import * as fluxKustomize from '@kubernetes-models/flux-cd/kustomize.toolkit.fluxcd.io/v1';
import { agentMounts, placesOn } from '../../src/compiler/agent-mounts.ts';
import { type K8sObject, mustCompile, objectsOf, topologyFiles } from '../support/support.ts';

type Model = { apiVersion: string; kind: string; new (data: unknown): { validate(): void } };
const models = new Map<string, Model>();
for (const mod of [core, apps, policy, rbac, apiext, admission, argo, fluxSource, fluxKustomize] as Record<string, unknown>[]) {
  for (const v of Object.values(mod)) {
    const m = v as Model;
    if (typeof m === 'function' && m.apiVersion && m.kind) models.set(`${m.apiVersion}/${m.kind}`, m);
  }
}

const ajv = new Ajv({ strict: false, allErrors: true });
function crdValidator(crd: any, version: string): ValidateFunction {
  const v = crd.spec.versions.find((x: any) => x.name === version);
  return ajv.compile(v.schema.openAPIV3Schema);
}
const openYurt = crdValidator(parse(readFileSync('test/vendor/openyurt/raven.openyurt.io_gateways.yaml', 'utf8')), 'v1beta1');

const sources = [...topologyFiles(), ...topologyFiles('test/fixtures/good')];
const all = objectsOf(mustCompile(sources));
const ours = crdValidator(all.find((o) => o.obj.kind === 'CustomResourceDefinition')!.obj, 'v1beta1');
const of = (kind: string): K8sObject[] => all.filter((o) => o.obj.kind === kind).map((o) => o.obj);

test('every generated object validates against the schema of its API', () => {
  const failures: string[] = [];
  for (const { file, obj } of all) {
    const key = `${obj.apiVersion}/${obj.kind}`;
    if (obj.kind === 'Gateway') continue;
    const M = models.get(key);
    if (!M) {
      failures.push(`${file}: no schema known for ${key}`);
      continue;
    }
    try {
      new M(obj).validate();
    } catch (e) {
      failures.push(`${file}: ${(e as Error).message.slice(0, 300)}`);
    }
  }
  assert.equal(failures, []);
  assert.ok(all.length > 40, `expected a full bundle, got ${all.length} objects`);
});

test('every Gateway validates against OpenYurt\'s own CRD and against ours', () => {
  const gateways = of('Gateway');
  assert.ok(gateways.length >= 10);
  for (const gw of gateways) {
    assert.ok(openYurt(gw), `${gw.metadata.name} vs OpenYurt: ${ajv.errorsText(openYurt.errors)}`);
    assert.ok(ours(gw), `${gw.metadata.name} vs ours: ${ajv.errorsText(ours.errors)}`);
  }
});

test('our CRD rejects what OpenYurt\'s validating webhook rejects', () => {
  const gw = structuredClone(of('Gateway')[0]!);
  gw.spec.tunnelConfig.Replicas = 2;
  assert.not.ok(ours(gw), 'tunnel replicas above 1');
  const bad = structuredClone(of('Gateway')[0]!);
  bad.spec.endpoints[0].type = 'other';
  assert.not.ok(ours(bad), 'unknown endpoint type');
});

test('the CRD schema uses only JSON Schema and Kubernetes keywords (strict ajv rejects anything else)', () => {
  const strict = new Ajv({ strict: true, allowUnionTypes: true });
  strict.addVocabulary(['x-kubernetes-list-type', 'x-kubernetes-map-type', 'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-int-or-string']);
  const crd = of('CustomResourceDefinition')[0]!;
  strict.compile(crd.spec.versions[0].schema.openAPIV3Schema);
  assert.not.match(JSON.stringify(crd), /"x[A-Z]|openApiv3/);
});

test('the CRD serves and stores v1beta1, with status subresource and active-endpoint columns', () => {
  const crd = of('CustomResourceDefinition')[0]!;
  assert.is(crd.metadata.name, 'gateways.raven.openyurt.io');
  assert.is(crd.spec.scope, 'Cluster');
  const [v] = crd.spec.versions;
  assert.equal([v.name, v.served, v.storage], ['v1beta1', true, true]);
  assert.equal(v.subresources, { status: {} });
  assert.equal(v.additionalPrinterColumns.map((c: any) => c.name), ['Exposure', 'Tunnel', 'Proxy', 'Age']);
});

test('the agent runs on every node, on the host network, with its identity from the downward API', () => {
  for (const ds of of('DaemonSet')) {
    const pod = ds.spec.template.spec;
    assert.is(pod.hostNetwork, true);
    assert.equal(pod.tolerations, [{ operator: 'Exists' }]);
    const env = Object.fromEntries(pod.containers[0].env.map((e: any) => [e.name, e.valueFrom?.fieldRef?.fieldPath]));
    assert.is(env.NODE_NAME, 'spec.nodeName');
    assert.is(env.NODE_IP, 'status.hostIP');
    assert.ok(pod.volumes.some((v: any) => v.hostPath?.path === '/var/lib/raven'), 'persisted key directory');
    const region = ds.metadata.name === 'raven-agent' ? undefined : ds.metadata.name.replace(/^raven-agent-gw-/, '');
    assert.equal(ds.spec.selector.matchLabels, region ? { 'app.kubernetes.io/name': 'raven-agent-gateway', 'raven-gitops.io/region': region } : { 'app.kubernetes.io/name': 'raven-agent' });
    // Kubernetes rejects a matchFields requirement with more than one value.
    for (const term of pod.affinity?.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms ?? []) {
      for (const r of term.matchFields) assert.equal([r.key, r.values.length], ['metadata.name', 1], `${ds.metadata.name}: one node per matchFields requirement`);
    }
  }
});

test('every node runs exactly one agent: its region\'s gateway DaemonSet if it is a candidate, raven-agent otherwise', () => {
  for (const file of sources) {
    const objects = objectsOf(mustCompile([file])).map((o) => o.obj);
    const sets = objects.filter((o) => o.kind === 'DaemonSet');
    const topo = parse(readFileSync(file, 'utf8'));
    const candidates = topo.spec.regions.flatMap((r: any) => (r.endpoints ?? []).map((e: any) => [e.node, r.name]));
    for (const [node, region] of [...candidates, ['an-ordinary-node', undefined]]) {
      assert.equal(sets.filter((ds) => placesOn(ds, node)).map((ds) => ds.metadata.name), [region ? `raven-agent-gw-${region}` : 'raven-agent'], `${file}: ${node}`);
    }
  }
});

test('Secrets only where needed: the PSK and a region\'s proxy Secret on its candidates, nothing on other nodes', () => {
  const objects = objectsOf(mustCompile(['topologies/retail-eu.yaml', 'topologies/seed.yaml'])).map((o) => o.obj);
  const retail = objects.filter((o) => o.metadata.labels?.['raven-gitops.io/cluster'] === 'retail-eu');
  const seed = objects.filter((o) => o.metadata.labels?.['raven-gitops.io/cluster'] === 'seed');
  assert.equal(agentMounts(retail, 'an-ordinary-node'), { daemonSet: 'raven-agent' });
  assert.equal(agentMounts(retail, 'lyon-edge-2'), { daemonSet: 'raven-agent-gw-factory-lyon', psk: { name: 'raven-ipsec-psk', key: 'psk' }, proxySecret: 'raven-proxy-factory-lyon' });
  assert.equal(agentMounts(seed, 'hz-1'), { daemonSet: 'raven-agent-gw-hangzhou', proxySecret: 'raven-proxy-hangzhou' }, 'no PSK with WireGuard');
  for (const ds of of('DaemonSet')) {
    const pod = ds.spec.template.spec;
    const secrets = pod.volumes.filter((v: any) => v.secret);
    if (ds.metadata.name === 'raven-agent') assert.equal(secrets, [], `${ds.metadata.labels?.['raven-gitops.io/cluster']}: raven-agent mounts no Secret`);
    for (const v of secrets) assert.is(v.secret.defaultMode, 0o400, `${ds.metadata.name}: ${v.name} readable by root only`);
    assert.not.ok(JSON.stringify(pod).includes('secretKeyRef'), `${ds.metadata.name}: no Secret in the environment`);
  }
});

test('the controller runs two replicas with a fixed selector and a service account token', () => {
  for (const d of of('Deployment')) {
    assert.is(d.spec.replicas, 2);
    assert.equal(d.spec.selector.matchLabels, { 'app.kubernetes.io/name': 'raven-controller' });
    assert.is(d.spec.template.spec.serviceAccountName, 'raven-controller');
    assert.is(d.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem, true);
  }
});

test('every container has a read-only root filesystem: the agent writes only its state dir and wireguard-go\'s sockets (hostPaths), the controller nowhere', () => {
  const writable = (pod: any): string[] => {
    const volumes = new Map(pod.volumes?.map((v: any) => [v.name, v]) ?? []);
    return pod.containers[0].volumeMounts?.filter((m: any) => !m.readOnly).map((m: any) => `${m.mountPath} <- ${JSON.stringify((volumes.get(m.name) as any)?.hostPath ?? volumes.get(m.name))}`) ?? [];
  };
  const sets = of('DaemonSet');
  const deployments = of('Deployment');
  assert.ok(sets.length >= 4 && deployments.length >= 2);
  for (const ds of sets) {
    const pod = ds.spec.template.spec;
    assert.equal(pod.containers[0].securityContext, { privileged: true, runAsUser: 0, runAsGroup: 0, readOnlyRootFilesystem: true }, `${ds.metadata.name}: root explicitly, the image's default user being non-root`);
    assert.equal(writable(pod), [
      '/var/lib/raven <- {"path":"/var/lib/raven","type":"DirectoryOrCreate"}',
      '/var/run/wireguard <- {"path":"/var/run/wireguard","type":"DirectoryOrCreate"}',
    ], `${ds.metadata.name}: writable mounts`);
  }
  for (const d of deployments) {
    const pod = d.spec.template.spec;
    assert.equal(pod.containers[0].securityContext, { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } }, d.metadata.name);
    assert.equal(writable(pod), [], `${d.metadata.name}: no writable mount`);
    assert.is(pod.volumes, undefined);
  }
});

test('memory is sized from the soak: agents request what they use (more where the L7 proxy may run), limits keep headroom over the peak', () => {
  for (const ds of of('DaemonSet')) {
    const pod = ds.spec.template.spec;
    const proxy = pod.volumes.some((v: any) => v.name === 'proxy-certs');
    assert.equal(pod.containers[0].resources, { requests: { cpu: '50m', memory: proxy ? '160Mi' : '112Mi' }, limits: { memory: '256Mi' } }, ds.metadata.name);
  }
  for (const d of of('Deployment')) assert.equal(d.spec.template.spec.containers[0].resources, { requests: { cpu: '50m', memory: '112Mi' }, limits: { memory: '512Mi' } }, d.metadata.name);
});

test('RBAC is least-privilege: no wildcards, no secrets, writes only where the runtime needs them', () => {
  const rules = [...of('ClusterRole'), ...of('Role')].flatMap((r) => r.rules.map((rule: any) => ({ role: `${r.kind}/${r.metadata.name}`, ...rule })));
  for (const r of rules) {
    assert.not.ok([...r.verbs, ...r.resources, ...r.apiGroups].includes('*'), `${r.role} uses a wildcard`);
    assert.not.ok(r.resources.includes('secrets'), `${r.role} can read secrets`);
  }
  const agentWrites = rules.filter((r) => r.role.endsWith('raven-agent') && r.verbs.some((v: string) => ['update', 'patch', 'create', 'delete'].includes(v)));
  assert.equal([...new Set(agentWrites.flatMap((r) => r.resources))].sort(), ['leases']);
  // The agent replaces its Lease (get + update) and reads its ConfigMap as files: nothing more.
  assert.equal([...new Set(rules.filter((r) => r.role === 'Role/raven-agent').map((r) => JSON.stringify([r.resources, r.verbs])))], [JSON.stringify([['leases'], ['create', 'get', 'update']])]);
  for (const cr of of('ClusterRole')) {
    assert.not.ok(cr.rules.some((r: any) => r.resources.includes('gateways') && r.verbs.includes('update')), `${cr.metadata.name} may rewrite Gateway specs that git owns`);
  }
});

test('no Secret objects and no secret material in the output: the PSK is a reference, mounted as a file', () => {
  assert.is(of('Secret').length, 0);
  const ipsec = of('DaemonSet').find((d) => d.metadata.name === 'raven-agent-gw-frankfurt')!;
  const pod = ipsec.spec.template.spec;
  assert.equal(pod.volumes.find((v: any) => v.name === 'ipsec-psk').secret, { secretName: 'raven-ipsec-psk', items: [{ key: 'psk', path: 'psk' }], defaultMode: 0o400 });
  assert.equal(pod.containers[0].volumeMounts.find((m: any) => m.name === 'ipsec-psk'), { name: 'ipsec-psk', mountPath: '/etc/raven/ipsec', readOnly: true });
});

test('Argo CD syncs the CRD first, the namespace next, the runtime, and the Gateways last', () => {
  const wave = (o: K8sObject): number => Number(o.metadata.annotations?.['argocd.argoproj.io/sync-wave']);
  const synced = all.filter((o) => !o.file.includes('/bootstrap/') && !o.file.startsWith('argocd-')).map((o) => o.obj);
  const crd = synced.filter((o) => o.kind === 'CustomResourceDefinition').map(wave);
  const ns = synced.filter((o) => o.kind === 'Namespace').map(wave);
  const runtime = synced.filter((o) => ['Deployment', 'DaemonSet', 'ConfigMap', 'ClusterRole'].includes(o.kind)).map(wave);
  const policies = synced.filter((o) => o.kind.startsWith('ValidatingAdmissionPolicy')).map(wave);
  assert.ok(policies.length > 0 && Math.max(...policies) < Math.min(...runtime), 'the Lease policy is in force before the agents start');
  const gws = synced.filter((o) => o.kind === 'Gateway').map(wave);
  assert.ok(Math.max(...crd) < Math.min(...ns) && Math.max(...ns) < Math.min(...runtime) && Math.max(...runtime) < Math.min(...gws));
  for (const app of of('Application')) assert.ok(app.spec.syncPolicy.syncOptions.includes('ServerSideApply=true'));
});

test('cluster-scoped objects carry no namespace and system namespaces are never created', () => {
  for (const kind of ['CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding', 'Gateway', 'Namespace']) {
    for (const o of of(kind)) assert.is(o.metadata.namespace, undefined, `${kind}/${o.metadata.name}`);
  }
  assert.not.ok(of('Namespace').some((n) => n.metadata.name === 'kube-system'));
});

test('the namespace the compiler creates admits the privileged host-network agents under Pod Security Admission', () => {
  const namespaces = of('Namespace');
  assert.ok(namespaces.length > 0);
  for (const ns of namespaces) {
    const psa = Object.fromEntries(Object.entries(ns.metadata.labels ?? {}).filter(([k]) => k.startsWith('pod-security.kubernetes.io/')));
    assert.equal(psa, {
      'pod-security.kubernetes.io/audit': 'privileged',
      'pod-security.kubernetes.io/enforce': 'privileged',
      'pod-security.kubernetes.io/enforce-version': 'latest',
      'pod-security.kubernetes.io/warn': 'privileged',
    }, ns.metadata.name);
  }
});

test('neither Argo CD nor Flux ever prunes or deletes the Gateway CRD (deleting it would delete every Gateway)', () => {
  const crds = all.filter(({ obj }) => obj.kind === 'CustomResourceDefinition');
  assert.ok(crds.length > 0);
  for (const { file, obj } of crds) {
    const a = obj.metadata.annotations ?? {};
    assert.is(a['argocd.argoproj.io/sync-options'], 'Prune=false,Delete=false', file);
    assert.is(a['kustomize.toolkit.fluxcd.io/prune'], 'disabled', file);
  }
});

test('Flux applies the layers in order and health-checks the runtime', () => {
  const ks = of('Kustomization').filter((k) => k.metadata.name.startsWith('raven-seed-'));
  assert.equal(ks.map((k) => [k.metadata.name, k.spec.dependsOn?.[0]?.name ?? null]), [
    ['raven-seed-crds', null],
    ['raven-seed-runtime', 'raven-seed-crds'],
    ['raven-seed-gateways', 'raven-seed-runtime'],
  ]);
  assert.equal(ks[1]!.spec.healthChecks.map((h: any) => `${h.kind}/${h.name}`), ['Deployment/raven-controller', 'DaemonSet/raven-agent', 'DaemonSet/raven-agent-gw-cloud', 'DaemonSet/raven-agent-gw-hangzhou', 'DaemonSet/raven-agent-gw-qingdao']);
  const repo = of('GitRepository').find((g) => g.metadata.name === 'raven-lb-cluster')!;
  assert.equal(repo.spec.ref, { commit: '0123456789abcdef0123456789abcdef01234567' });
});

test('several Argo CD clusters get one ApplicationSet per Argo CD namespace', () => {
  const sets = of('ApplicationSet');
  assert.equal(sets.map((s) => s.metadata.namespace), ['argocd', 'gitops']);
  assert.equal(sets[0]!.spec.generators[0].list.elements.map((e: any) => e.cluster), ['minimal', 'seed']);
});

test.run();
