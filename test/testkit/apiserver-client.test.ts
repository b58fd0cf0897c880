/** Embedded API server with @kubernetes/client-node: informers, typed APIs, concurrency, status, patches, CRDs. */
import { readFileSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { parse } from 'yaml';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { failure, GATEWAY, http, SEED, startLab, waitFor, watchEvents, type Lab } from '../support/apiserver-support.ts';

let lab: Lab;
const merge = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
const gateway = (name: string): any => ({ ...parse(readFileSync(`${SEED}/gateways/gateway-gw-cloud.yaml`, 'utf8')), metadata: { name, labels: { 'raven-gitops.io/region': name } } });

test.before(async () => {
  lab = await startLab({ seedCrds: true });
});
test.after(async () => {
  await lab.api.close();
});

test('discovery: core and group versions, namespaced vs cluster scope, CRD resources with short names', async () => {
  const core = await http(lab.api, 'GET', '/api/v1');
  const byName = new Map(core.json.resources.map((r: any) => [r.name, r]));
  assert.is((byName.get('configmaps') as any).namespaced, true);
  assert.is((byName.get('nodes') as any).namespaced, false);
  assert.ok(byName.has('namespaces/status'));
  const groups = (await http(lab.api, 'GET', '/apis')).json.groups.map((g: any) => g.name);
  for (const g of ['apps', 'coordination.k8s.io', 'events.k8s.io', 'apiextensions.k8s.io', 'rbac.authorization.k8s.io', 'policy', 'raven.openyurt.io']) assert.ok(groups.includes(g), g);
  const gw = (await http(lab.api, 'GET', '/apis/raven.openyurt.io/v1beta1')).json.resources;
  assert.equal(gw.map((r: any) => [r.name, r.namespaced, r.kind, r.shortNames]), [['gateways', false, 'Gateway', ['gw']], ['gateways/status', false, 'Gateway', undefined]]);
  assert.is((await http(lab.api, 'GET', '/api/v1/namespaces/default/nodes')).status, 404, 'cluster-scoped resource under a namespace');
  assert.is((await http(lab.api, 'GET', '/apis/raven.openyurt.io/v1beta1/namespaces/default/gateways')).status, 404);
});

test('openapi: v3 index and per-group-version documents kubectl reads; v2 an empty protobuf document', async () => {
  const index = (await http(lab.api, 'GET', '/openapi/v3')).json;
  const url = index.paths['apis/raven.openyurt.io/v1beta1'].serverRelativeURL;
  assert.match(url, /^\/openapi\/v3\/apis\/raven\.openyurt\.io\/v1beta1\?hash=[0-9A-F]+$/);
  const doc = (await http(lab.api, 'GET', url)).json;
  const patch = doc.paths['/apis/raven.openyurt.io/v1beta1/gateways/{name}'].patch;
  assert.equal(patch['x-kubernetes-group-version-kind'], { group: 'raven.openyurt.io', kind: 'Gateway', version: 'v1beta1' });
  assert.ok(patch.parameters.some((p: any) => p.name === 'fieldValidation' && p.in === 'query'));
  assert.equal(Object.keys(patch.requestBody.content).sort(), ['application/apply-patch+yaml', 'application/json-patch+json', 'application/merge-patch+json']);
  const v2 = await fetch(lab.api.url + '/openapi/v2', { headers: { Accept: 'application/com.github.proto-openapi.spec.v2@v1.0+protobuf' } });
  assert.equal([...new Uint8Array(await v2.arrayBuffer()).slice(0, 5)], [0x0a, 3, 0x32, 0x2e, 0x30], 'field 1 (swagger) = "2.0"');
});

test('errors are Status objects: NotFound, AlreadyExists, namespace must exist', async () => {
  const nf = await failure(lab.core.readNamespacedConfigMap({ name: 'nope', namespace: 'default' }));
  assert.is(nf.code, 404);
  assert.equal({ kind: nf.status.kind, apiVersion: nf.status.apiVersion, status: nf.status.status, reason: nf.status.reason, code: nf.status.code }, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404 });
  assert.is(nf.status.message, 'configmaps "nope" not found');
  await lab.core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'dup' } } });
  const dup = await failure(lab.core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'dup' } } }));
  assert.equal([dup.code, dup.status.reason], [409, 'AlreadyExists']);
  const ns = await failure(lab.core.createNamespacedConfigMap({ namespace: 'missing', body: { metadata: { name: 'x' } } }));
  assert.equal([ns.code, ns.status.message], [404, 'namespaces "missing" not found']);
  const bad = await http(lab.api, 'POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'Not_A_Name' } });
  assert.equal([bad.status, bad.json.reason], [422, 'Invalid']);
  const other = await http(lab.api, 'POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'x', namespace: 'kube-system' } });
  assert.equal([other.status, other.json.reason], [400, 'BadRequest']);
  const post = await http(lab.api, 'POST', '/api/v1/namespaces/default/configmaps/dup', { metadata: { name: 'dup' } });
  assert.equal([post.status, post.json.reason, post.json.kind], [405, 'MethodNotAllowed', 'Status']);
  const unknown = await http(lab.api, 'GET', '/apis/nope.example.com/v1/things');
  assert.equal([unknown.status, unknown.json.reason], [404, 'NotFound']);
});

test('create sets uid, resourceVersion, creationTimestamp, generation; generateName; one global resourceVersion', async () => {
  const a = await lab.core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { generateName: 'gen-' }, data: { k: 'v' } } });
  assert.match(a.metadata!.name!, /^gen-[a-z0-9]{5}$/);
  assert.match(a.metadata!.uid!, /^[0-9a-f-]{36}$/);
  assert.instance(a.metadata!.creationTimestamp, Date);
  assert.is(a.metadata!.generation, 1);
  const b = await lab.core.createNamespace({ body: { metadata: { name: 'rv-check' } } });
  assert.is(Number(b.metadata!.resourceVersion), Number(a.metadata!.resourceVersion) + 1, 'counter shared across resources');
  assert.is(b.status?.phase, 'Active');
  assert.is(b.metadata!.labels!['kubernetes.io/metadata.name'], 'rv-check');
});

test('informer (list + watch) sees ADD, UPDATE and DELETE; label selector transitions become add/delete', async () => {
  const ns = 'informer';
  await lab.core.createNamespace({ body: { metadata: { name: ns } } });
  const path = `/api/v1/namespaces/${ns}/configmaps`;
  const all = k8s.makeInformer(lab.kc, path, () => lab.core.listNamespacedConfigMap({ namespace: ns }));
  const selected = k8s.makeInformer(lab.kc, path, () => lab.core.listNamespacedConfigMap({ namespace: ns, labelSelector: 'team=net' }), 'team=net');
  const seen: string[] = [];
  const sel: string[] = [];
  for (const [inf, out] of [[all, seen], [selected, sel]] as const) {
    inf.on('add', (o) => out.push(`add ${o.metadata!.name} ${JSON.stringify(o.data ?? {})}`));
    inf.on('update', (o) => out.push(`update ${o.metadata!.name} ${JSON.stringify(o.data ?? {})}`));
    inf.on('delete', (o) => out.push(`delete ${o.metadata!.name}`));
    inf.on('error', (e) => out.push(`error ${e}`));
  }
  await lab.core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'before' } } });
  await all.start();
  await selected.start();
  await waitFor('initial list', () => seen.includes('add before {}'));
  const c = await lab.core.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'c', labels: { team: 'net' } }, data: { v: '1' } } });
  await lab.core.replaceNamespacedConfigMap({ name: 'c', namespace: ns, body: { ...c, data: { v: '2' } } });
  await lab.core.patchNamespacedConfigMap({ name: 'c', namespace: ns, body: { metadata: { labels: { team: 'ops' } } } }, merge);
  await lab.core.deleteNamespacedConfigMap({ name: 'c', namespace: ns });
  await waitFor('delete', () => seen.includes('delete c'));
  await waitFor('selected delete', () => sel.includes('delete c'));
  assert.equal(seen, ['add before {}', 'add c {"v":"1"}', 'update c {"v":"2"}', 'update c {"v":"2"}', 'delete c']);
  assert.equal(sel, ['add c {"v":"1"}', 'update c {"v":"2"}', 'delete c'], 'relabelled out of the selector = DELETED');
  assert.equal(all.list(ns).map((o) => o.metadata!.name), ['before']);
  await all.stop();
  await selected.stop();
});

test('update with a stale resourceVersion is 409 Conflict; missing object is 404; no-op writes keep the resourceVersion', async () => {
  const cm = await lab.core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'occ' }, data: { v: '1' } } });
  const fresh = await lab.core.replaceNamespacedConfigMap({ name: 'occ', namespace: 'default', body: { ...cm, data: { v: '2' } } });
  const stale = await failure(lab.core.replaceNamespacedConfigMap({ name: 'occ', namespace: 'default', body: { ...cm, data: { v: '3' } } }));
  assert.is(stale.code, 409);
  assert.is(stale.status.reason, 'Conflict');
  assert.match(stale.status.message, 'Operation cannot be fulfilled on configmaps "occ": the object has been modified');
  const same = await lab.core.replaceNamespacedConfigMap({ name: 'occ', namespace: 'default', body: fresh });
  assert.is(same.metadata!.resourceVersion, fresh.metadata!.resourceVersion);
  const missing = await failure(lab.core.replaceNamespacedConfigMap({ name: 'ghost', namespace: 'default', body: { metadata: { name: 'ghost' } } }));
  assert.is(missing.code, 404);
});

test('leases: create, then optimistic replace — of two candidates with the same read, exactly one wins', async () => {
  const coord = lab.kc.makeApiClient(k8s.CoordinationV1Api);
  const lease = await coord.createNamespacedLease({ namespace: 'default', body: { metadata: { name: 'raven-controller' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 15, renewTime: new k8s.V1MicroTime() } } });
  assert.is(lease.spec!.holderIdentity, 'a');
  const read = await coord.readNamespacedLease({ name: 'raven-controller', namespace: 'default' });
  const results = await Promise.allSettled(['b', 'c'].map((who) => coord.replaceNamespacedLease({ name: 'raven-controller', namespace: 'default', body: { ...read, spec: { ...read.spec, holderIdentity: who, leaseTransitions: 1 } } })));
  assert.equal(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  const loser = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
  assert.is(loser.reason.code, 409);
  const winner = (results.find((r) => r.status === 'fulfilled') as PromiseFulfilledResult<k8s.V1Lease>).value;
  const now = await coord.readNamespacedLease({ name: 'raven-controller', namespace: 'default' });
  assert.is(now.spec!.holderIdentity, winner.spec!.holderIdentity);
  assert.match(String(now.spec!.renewTime), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'MicroTime stored as sent');
});

test('status subresource (CRD): main writes ignore status, /status writes only status, generation bumps only on spec', async () => {
  const created: any = await lab.custom.createClusterCustomObject({ ...GATEWAY, body: { ...gateway('gw-status'), status: { nodes: [{ nodeName: 'x', privateIP: '1.1.1.1', subnets: [] }] } } });
  assert.is(created.status, undefined, 'status dropped on create');
  assert.is(created.metadata.generation, 1);
  const st: any = await lab.custom.patchClusterCustomObjectStatus({ ...GATEWAY, name: 'gw-status', body: { spec: { exposeType: 'LoadBalancer' }, status: { activeEndpoints: [{ nodeName: 'cloud-gw-1', type: 'tunnel' }] } } }, merge);
  assert.equal(st.status.activeEndpoints, [{ nodeName: 'cloud-gw-1', type: 'tunnel' }]);
  assert.is(st.spec.exposeType, 'PublicIP', 'spec change through /status ignored');
  assert.is(st.metadata.generation, 1);
  const main: any = await lab.custom.patchClusterCustomObject({ ...GATEWAY, name: 'gw-status', body: { spec: { exposeType: '' }, status: { activeEndpoints: [] } } }, merge);
  assert.equal(main.status.activeEndpoints, [{ nodeName: 'cloud-gw-1', type: 'tunnel' }], 'status change through the main resource ignored');
  assert.is(main.spec.exposeType, '');
  assert.is(main.metadata.generation, 2);
  const labelled: any = await lab.custom.patchClusterCustomObject({ ...GATEWAY, name: 'gw-status', body: { metadata: { labels: { x: 'y' } } } }, merge);
  assert.is(labelled.metadata.generation, 2, 'metadata change does not bump generation');
  assert.ok(Number(labelled.metadata.resourceVersion) > Number(main.metadata.resourceVersion));
});

test('status subresource (built-in Deployment) and no /status for types without one', async () => {
  const apps = lab.kc.makeApiClient(k8s.AppsV1Api);
  const body: k8s.V1Deployment = { metadata: { name: 'web' }, spec: { replicas: 1, selector: { matchLabels: { app: 'web' } }, template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'web', image: 'nginx:1' }] } } } };
  const d = await apps.createNamespacedDeployment({ namespace: 'default', body });
  const s = await apps.replaceNamespacedDeploymentStatus({ name: 'web', namespace: 'default', body: { ...d, spec: { ...d.spec!, replicas: 5 }, status: { readyReplicas: 1, replicas: 1 } } });
  assert.is(s.spec!.replicas, 1);
  assert.is(s.status!.readyReplicas, 1);
  const m = await apps.patchNamespacedDeployment({ name: 'web', namespace: 'default', body: { spec: { replicas: 3 }, status: { readyReplicas: 9 } } }, merge);
  assert.equal([m.spec!.replicas, m.status!.readyReplicas, m.metadata!.generation], [3, 1, 2]);
  assert.is((await http(lab.api, 'GET', '/api/v1/namespaces/default/configmaps/occ/status')).status, 404);
});

test('patch content types: merge, json, strategic (built-ins only), apply; bad content type is 415', async () => {
  const apps = lab.kc.makeApiClient(k8s.AppsV1Api);
  await lab.core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: 'patchme' }, data: { a: '1' } } });
  const m = await lab.core.patchNamespacedConfigMap({ name: 'patchme', namespace: 'default', body: { data: { b: '2', a: null } } }, merge);
  assert.equal(m.data, { b: '2' });
  const j = await lab.core.patchNamespacedConfigMap({ name: 'patchme', namespace: 'default', body: [{ op: 'add', path: '/data/c', value: '3' }, { op: 'test', path: '/data/b', value: '2' }] }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch));
  assert.equal(j.data, { b: '2', c: '3' });
  const failed = await failure(lab.core.patchNamespacedConfigMap({ name: 'patchme', namespace: 'default', body: [{ op: 'test', path: '/data/b', value: 'x' }] }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch)));
  assert.is(failed.code, 422);
  const sm = await apps.patchNamespacedDeployment(
    { name: 'web', namespace: 'default', body: { spec: { template: { spec: { containers: [{ name: 'sidecar', image: 'busybox:1' }] } } } } },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch),
  );
  assert.equal(sm.spec!.template.spec!.containers.map((c) => c.name), ['web', 'sidecar'], 'containers merged by name');
  const crSmp = await failure(lab.custom.patchClusterCustomObject({ ...GATEWAY, name: 'gw-status', body: { spec: {} } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch)));
  assert.is(crSmp.code, 415, 'kube-apiserver rejects strategic merge patch on custom resources');
  const ssa = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.ServerSideApply);
  const applied = await lab.core.patchNamespacedConfigMap({ name: 'applied', namespace: 'default', fieldManager: 'raven-test', body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'applied' }, data: { x: '1' } } }, ssa);
  assert.equal(applied.data, { x: '1' });
  assert.equal(applied.metadata!.managedFields!.map((f) => [f.manager, f.operation]), [['raven-test', 'Apply']]);
  const noManager = await failure(lab.core.patchNamespacedConfigMap({ name: 'applied', namespace: 'default', body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'applied' } } }, ssa));
  assert.is(noManager.code, 422);
  const conflict = await failure(lab.core.patchNamespacedConfigMap({ name: 'applied', namespace: 'default', fieldManager: 'other', body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'applied' }, data: { x: '2' } } }, ssa));
  assert.is(conflict.code, 409);
  assert.equal(conflict.status.details.causes.map((c: any) => c.field), ['.data.x']);
  const forced = await lab.core.patchNamespacedConfigMap({ name: 'applied', namespace: 'default', fieldManager: 'other', force: true, body: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'applied' }, data: { x: '2' } } }, ssa);
  assert.equal(forced.data, { x: '2' });
  const bogus = await http(lab.api, 'PATCH', '/api/v1/namespaces/default/configmaps/applied', '{}', 'text/plain');
  assert.equal([bogus.status, bogus.json.reason], [415, 'UnsupportedMediaType']);
});

test('custom resources are validated against the CRD schema (422 with the field) and pruned', async () => {
  const bad = await failure(lab.custom.createClusterCustomObject({ ...GATEWAY, body: { ...gateway('gw-bad'), spec: { tunnelConfig: { Replicas: 2 }, exposeType: 'Nope' } } }));
  assert.is(bad.code, 422);
  assert.is(bad.status.reason, 'Invalid');
  assert.match(bad.status.message, 'Gateway.raven.openyurt.io "gw-bad" is invalid');
  assert.match(bad.status.message, 'spec.tunnelConfig.Replicas: Invalid value: 2: spec.tunnelConfig.Replicas in body should be less than or equal to 1');
  assert.match(bad.status.message, 'spec.exposeType: Unsupported value: "Nope"');
  const strict = await http(lab.api, 'POST', '/apis/raven.openyurt.io/v1beta1/gateways?fieldValidation=Strict', { ...gateway('gw-strict'), spec: { exposeType: '', surprise: 1 } });
  assert.is(strict.status, 400);
  assert.match(strict.json.message, 'unknown field "spec.surprise"');
  const warn = await http(lab.api, 'POST', '/apis/raven.openyurt.io/v1beta1/gateways', { ...gateway('gw-warn'), spec: { exposeType: '', surprise: 1 } });
  assert.is(warn.status, 201);
  assert.is(warn.json.spec.surprise, undefined, 'pruned');
  assert.match(warn.headers.get('warning') ?? '', 'unknown field \\"spec.surprise\\"');
  const noRv = await http(lab.api, 'PUT', '/apis/raven.openyurt.io/v1beta1/gateways/gw-warn', { ...gateway('gw-warn') });
  assert.is(noRv.status, 422, 'custom resources need metadata.resourceVersion on update');
});

test('list: label and field selectors, resourceVersion of the list, limit/continue pagination', async () => {
  for (const n of ['p1', 'p2', 'p3']) await lab.custom.createClusterCustomObject({ ...GATEWAY, body: gateway(n) });
  const list: any = await lab.custom.listClusterCustomObject({ ...GATEWAY, labelSelector: 'raven-gitops.io/region in (p1,p3)' });
  assert.equal(list.items.map((i: any) => i.metadata.name), ['p1', 'p3']);
  assert.is(list.metadata.resourceVersion, lab.api.resourceVersion());
  const byName: any = await lab.custom.listClusterCustomObject({ ...GATEWAY, fieldSelector: 'metadata.name=p2' });
  assert.equal(byName.items.map((i: any) => i.metadata.name), ['p2']);
  const page1 = (await http(lab.api, 'GET', '/apis/raven.openyurt.io/v1beta1/gateways?labelSelector=raven-gitops.io/region&limit=2')).json;
  assert.is(page1.items.length, 2);
  assert.ok(page1.metadata.continue);
  await lab.custom.createClusterCustomObject({ ...GATEWAY, body: gateway('p0-late') });
  const page2 = (await http(lab.api, 'GET', `/apis/raven.openyurt.io/v1beta1/gateways?labelSelector=raven-gitops.io/region&limit=2&continue=${page1.metadata.continue}`)).json;
  const names = [...page1.items, ...page2.items].map((i: any) => i.metadata.name);
  assert.ok(!names.includes('p0-late'), 'continue pages come from the snapshot of the first page');
  assert.is(page2.metadata.resourceVersion, page1.metadata.resourceVersion);
  const bad = await http(lab.api, 'GET', '/api/v1/configmaps?fieldSelector=data.x=1');
  assert.equal([bad.status, bad.json.reason], [400, 'BadRequest']);
});

test('CRDs register and unregister resources dynamically; deleting a CRD deletes its objects and ends watches', async () => {
  const crd = {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: 'widgets.example.com' },
    spec: {
      group: 'example.com',
      scope: 'Namespaced',
      names: { plural: 'widgets', singular: 'widget', kind: 'Widget' },
      versions: [
        { name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', properties: { size: { type: 'integer' } } } } } } },
        { name: 'v2', served: true, storage: false, schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } }, subresources: { status: {} } },
      ],
    },
  };
  const ext = lab.kc.makeApiClient(k8s.ApiextensionsV1Api);
  assert.is((await http(lab.api, 'GET', '/apis/example.com/v1')).status, 404);
  const created = await ext.createCustomResourceDefinition({ body: crd as any });
  assert.equal(created.status!.conditions!.map((c) => [c.type, c.status]), [['NamesAccepted', 'True'], ['Established', 'True']]);
  const disc = (await http(lab.api, 'GET', '/apis/example.com/v1')).json;
  assert.equal(disc.resources.map((r: any) => [r.name, r.namespaced]), [['widgets', true]]);
  assert.equal((await http(lab.api, 'GET', '/apis/example.com')).json.preferredVersion.version, 'v2');
  await lab.custom.createNamespacedCustomObject({ group: 'example.com', version: 'v1', plural: 'widgets', namespace: 'default', body: { apiVersion: 'example.com/v1', kind: 'Widget', metadata: { name: 'w' }, spec: { size: 1 } } });
  const asV2: any = await lab.custom.getNamespacedCustomObject({ group: 'example.com', version: 'v2', plural: 'widgets', namespace: 'default', name: 'w' });
  assert.is(asV2.apiVersion, 'example.com/v2', 'served in every version (conversion None)');
  const cluster = await http(lab.api, 'GET', '/apis/example.com/v1/widgets/w');
  assert.is(cluster.status, 404, 'namespaced CR has no cluster-scoped item path');
  const watching = watchEvents(lab.api, '/apis/example.com/v1/namespaces/default/widgets?watch=1', () => false, 3000);
  await waitFor('watch open', () => lab.api.openWatches() > 0);
  await ext.deleteCustomResourceDefinition({ name: 'widgets.example.com' });
  const events = await watching;
  assert.equal(events.map((e) => `${e.type} ${e.object.metadata.name}`), ['ADDED w', 'DELETED w']);
  assert.is((await http(lab.api, 'GET', '/apis/example.com/v1/namespaces/default/widgets')).status, 404);
  const invalid = await failure(ext.createCustomResourceDefinition({ body: { ...crd, metadata: { name: 'wrong.example.com' } } as any }));
  assert.is(invalid.code, 422);
});

test('finalizers hold deletion; namespace deletion removes its contents', async () => {
  await lab.core.createNamespace({ body: { metadata: { name: 'doomed' } } });
  await lab.core.createNamespacedConfigMap({ namespace: 'doomed', body: { metadata: { name: 'held', finalizers: ['example.com/hold'] } } });
  await lab.core.createNamespacedConfigMap({ namespace: 'doomed', body: { metadata: { name: 'free' } } });
  await lab.core.deleteNamespace({ name: 'doomed' });
  const ns = await lab.core.readNamespace({ name: 'doomed' });
  assert.is(ns.status!.phase, 'Terminating');
  const left = await lab.core.listNamespacedConfigMap({ namespace: 'doomed' });
  assert.equal(left.items.map((i) => i.metadata!.name), ['held']);
  assert.ok(left.items[0]!.metadata!.deletionTimestamp);
  const refused = await failure(lab.core.createNamespacedConfigMap({ namespace: 'doomed', body: { metadata: { name: 'late' } } }));
  assert.is(refused.code, 403);
  await lab.core.patchNamespacedConfigMap({ name: 'held', namespace: 'doomed', body: { metadata: { finalizers: null } } }, merge);
  assert.is((await failure(lab.core.readNamespacedConfigMap({ name: 'held', namespace: 'doomed' }))).code, 404);
  assert.is((await failure(lab.core.readNamespace({ name: 'doomed' }))).code, 404, 'namespace goes when its last object does');
});

test('secrets: stringData folds into base64 data', async () => {
  const s = await lab.core.createNamespacedSecret({ namespace: 'default', body: { metadata: { name: 's' }, stringData: { psk: 'hunter2' } } });
  assert.equal(s.data, { psk: Buffer.from('hunter2').toString('base64') });
  assert.is(s.stringData, undefined);
  assert.is(s.type, 'Opaque');
});

test('deletecollection with a selector, delete preconditions, dryRun=All', async () => {
  await lab.core.createNamespace({ body: { metadata: { name: 'bulk' } } });
  for (const [n, tier] of [['b1', 'x'], ['b2', 'x'], ['b3', 'y']]) await lab.core.createNamespacedConfigMap({ namespace: 'bulk', body: { metadata: { name: n!, labels: { tier: tier! } } } });
  const dry = await http(lab.api, 'POST', '/api/v1/namespaces/bulk/configmaps?dryRun=All', { metadata: { name: 'dry' } });
  assert.is(dry.status, 201);
  assert.is((await failure(lab.core.readNamespacedConfigMap({ name: 'dry', namespace: 'bulk' }))).code, 404, 'dry run persisted nothing');
  const gone = await http(lab.api, 'DELETE', '/api/v1/namespaces/bulk/configmaps?labelSelector=tier%3Dx');
  assert.equal([gone.status, gone.json.kind, gone.json.items.map((i: any) => i.metadata.name)], [200, 'ConfigMapList', ['b1', 'b2']]);
  assert.equal((await lab.core.listNamespacedConfigMap({ namespace: 'bulk' })).items.map((i) => i.metadata!.name), ['b3']);
  const b3 = await lab.core.readNamespacedConfigMap({ name: 'b3', namespace: 'bulk' });
  const wrongUid = await failure(lab.core.deleteNamespacedConfigMap({ name: 'b3', namespace: 'bulk', body: { preconditions: { uid: '00000000-0000-0000-0000-000000000000' } } }));
  assert.equal([wrongUid.code, wrongUid.status.reason], [409, 'Conflict']);
  const dryDelete = await http(lab.api, 'DELETE', '/api/v1/namespaces/bulk/configmaps/b3?dryRun=All');
  assert.is(dryDelete.status, 200);
  const status = await lab.core.deleteNamespacedConfigMap({ name: 'b3', namespace: 'bulk', body: { preconditions: { uid: b3.metadata!.uid!, resourceVersion: b3.metadata!.resourceVersion! } } });
  assert.equal([status.kind, status.status, status.details?.name, status.details?.uid], ['Status', 'Success', 'b3', b3.metadata!.uid]);
});

test('services get a cluster IP that cannot change', async () => {
  const svc = await lab.core.createNamespacedService({ namespace: 'default', body: { metadata: { name: 'web' }, spec: { ports: [{ port: 80 }] } } });
  assert.match(svc.spec!.clusterIP!, /^10\.96\.\d+\.\d+$/);
  assert.equal([svc.spec!.type, svc.spec!.ports![0]!.protocol, svc.spec!.ports![0]!.targetPort], ['ClusterIP', 'TCP', 80]);
  const kept = await lab.core.replaceNamespacedService({ name: 'web', namespace: 'default', body: { ...svc, spec: { ...svc.spec, clusterIP: undefined, clusterIPs: undefined } } });
  assert.is(kept.spec!.clusterIP, svc.spec!.clusterIP, 'an update without clusterIP keeps it');
  const changed = await failure(lab.core.replaceNamespacedService({ name: 'web', namespace: 'default', body: { ...kept, spec: { ...kept.spec, clusterIP: '10.96.99.99' } } }));
  assert.is(changed.code, 422);
});

test.run();
