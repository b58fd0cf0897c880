/** Embedded API server, pure parts: patch formats, selectors, JSONPath, schema pruning, store revisions. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ApiError } from '../../src/testkit/apiserver/errors.ts';
import { jsonPatch, mergePatch, recordUpdate, serverSideApply, strategicMergePatch } from '../../src/testkit/apiserver/patch.ts';
import { compileCrdSchema } from '../../src/testkit/apiserver/schema.ts';
import { matchesLabels, parseFieldSelector, parseLabelSelector } from '../../src/testkit/apiserver/selectors.ts';
import { Store } from '../../src/testkit/apiserver/store.ts';
import { evalJsonPath, humanDuration, toTable } from '../../src/testkit/apiserver/table.ts';

function apiError(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (e) {
    if (e instanceof ApiError) return e;
    throw e;
  }
  throw new Error('expected an ApiError');
}

test('merge patch follows RFC 7386: null deletes, objects merge, arrays replace', () => {
  const out = mergePatch({ a: 1, b: { c: 2, d: 3 }, l: [1, 2] }, { a: null, b: { c: 9 }, l: [3], n: { x: null, y: 1 } });
  assert.equal(out, { b: { c: 9, d: 3 }, l: [3], n: { y: 1 } });
});

test('json patch: add/remove/replace/move/copy/test, "-" appends, failures are 422, malformed is 400', () => {
  const doc = { data: { a: '1' }, list: [1, 2] };
  const out = jsonPatch(doc, [
    { op: 'add', path: '/data/b', value: '2' },
    { op: 'add', path: '/list/-', value: 3 },
    { op: 'replace', path: '/data/a', value: 'x' },
    { op: 'copy', from: '/data/a', path: '/data/c' },
    { op: 'move', from: '/data/b', path: '/data/m~1n' },
    { op: 'remove', path: '/list/0' },
    { op: 'test', path: '/data/c', value: 'x' },
  ]);
  assert.equal(out, { data: { a: 'x', c: 'x', 'm/n': '2' }, list: [2, 3] });
  assert.equal(doc, { data: { a: '1' }, list: [1, 2] }, 'input untouched');
  assert.is(apiError(() => jsonPatch(doc, [{ op: 'test', path: '/data/a', value: 'nope' }])).code, 422);
  assert.is(apiError(() => jsonPatch(doc, [{ op: 'replace', path: '/data/zz', value: 1 }])).code, 422);
  assert.is(apiError(() => jsonPatch(doc, { op: 'add' })).code, 400);
});

test('strategic merge patch: lists merge by key, $patch delete, $setElementOrder, $deleteFromPrimitiveList, finalizers union', () => {
  const current = {
    metadata: { finalizers: ['a'] },
    spec: { containers: [{ name: 'x', image: 'x:1', ports: [{ containerPort: 80 }] }, { name: 'y', image: 'y:1' }], args: ['--a', '--b'] },
  };
  const out = strategicMergePatch(current, {
    metadata: { finalizers: ['b'] },
    spec: {
      '$setElementOrder/containers': [{ name: 'z' }, { name: 'x' }],
      containers: [{ name: 'x', image: 'x:2', '$setElementOrder/ports': [{ containerPort: 80 }, { containerPort: 81 }], ports: [{ containerPort: 81 }] }, { name: 'y', $patch: 'delete' }, { name: 'z', image: 'z:1' }],
      '$deleteFromPrimitiveList/args': ['--a'],
    },
  });
  assert.equal(out.metadata.finalizers, ['a', 'b']);
  assert.equal(out.spec.containers, [{ name: 'z', image: 'z:1' }, { name: 'x', image: 'x:2', ports: [{ containerPort: 80 }, { containerPort: 81 }] }]);
  assert.equal(out.spec.args, ['--b']);
  assert.not.ok(Object.keys(out.spec).some((k) => k.startsWith('$')));
});

test('server-side apply: creates, removes fields it stops applying, conflicts with other managers unless forced', () => {
  const base = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' } };
  const a = serverSideApply(undefined, { ...base, data: { x: '1', y: '2' } }, 'alice', false, 'v1', 't0');
  assert.equal(a.object.data, { x: '1', y: '2' });
  assert.equal(a.managedFields.map((m) => [m.manager, m.operation]), [['alice', 'Apply']]);
  assert.equal(a.managedFields[0]!.fieldsV1, { 'f:data': { 'f:x': {}, 'f:y': {} } });
  const withMeta = { ...a.object, metadata: { ...a.object.metadata, managedFields: a.managedFields } };
  // alice drops y: removed, since nobody else owns it.
  const b = serverSideApply(withMeta, { ...base, data: { x: '1' } }, 'alice', false, 'v1', 't1');
  assert.equal(b.object.data, { x: '1' });
  // bob sets x to another value: conflict with alice; forced, bob takes x over.
  const err = apiError(() => serverSideApply(withMeta, { ...base, data: { x: '9' } }, 'bob', false, 'v1', 't1'));
  assert.is(err.code, 409);
  assert.match(err.message, 'conflict with "alice" using v1: .data.x');
  const forced = serverSideApply(withMeta, { ...base, data: { x: '9' } }, 'bob', true, 'v1', 't1');
  assert.equal(forced.object.data, { x: '9', y: '2' });
  assert.equal(forced.managedFields.find((m) => m.manager === 'alice')!.fieldsV1, { 'f:data': { 'f:y': {} } });
  // Same value: shared ownership, no conflict.
  const shared = serverSideApply(withMeta, { ...base, data: { x: '1' } }, 'carol', false, 'v1', 't1');
  assert.is(shared.managedFields.length, 2);
});

test('update managers own the fields they change and take them from others', () => {
  const old = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c' }, data: { x: '1', y: '2' } };
  const created = recordUpdate([], undefined, old, 'creator', 'v1', 't0');
  assert.equal(created[0]!.fieldsV1, { 'f:data': { 'f:x': {}, 'f:y': {} } });
  const next = { ...old, data: { x: '1', y: '3', z: '4' } };
  const after = recordUpdate(created, old, next, 'editor', 'v1', 't1');
  assert.equal(after.map((m) => [m.manager, m.fieldsV1]), [
    ['creator', { 'f:data': { 'f:x': {} } }],
    ['editor', { 'f:data': { 'f:y': {}, 'f:z': {} } }],
  ]);
});

test('label selectors: =, ==, !=, in, notin, exists, !exists; bad syntax is 400', () => {
  const labels = { app: 'web', tier: 'front', env: 'prod' };
  const m = (s: string): boolean => matchesLabels(parseLabelSelector(s), labels);
  assert.ok(m('app=web,tier==front'));
  assert.ok(m('app!=db'));
  assert.ok(m('env in (prod, staging),tier notin (back)'));
  assert.ok(m('app,!missing'));
  assert.not.ok(m('app=db'));
  assert.not.ok(m('!app'));
  assert.not.ok(m('env notin (prod)'));
  assert.not.ok(matchesLabels(parseLabelSelector('x!=y,z in (a)'), {}));
  assert.ok(matchesLabels(parseLabelSelector('x!=y'), {}));
  assert.is(apiError(() => parseLabelSelector('app in prod')).code, 400);
  assert.is(apiError(() => parseLabelSelector('a b')).code, 400);
});

test('field selectors: metadata.name/namespace supported, unknown fields rejected with 400', () => {
  const store = new Store();
  const cm = store.registry.lookup('', 'v1', 'configmaps')!;
  assert.is(parseFieldSelector('metadata.name=a,metadata.namespace!=b', cm).length, 2);
  assert.match(apiError(() => parseFieldSelector('spec.foo=a', cm)).message, 'field label not supported: spec.foo');
});

test('JSONPath subset and human durations match kubectl printing', () => {
  const obj = { status: { activeEndpoints: [{ type: 'tunnel', nodeName: 'a' }, { type: 'proxy', nodeName: 'b' }, { type: 'proxy', nodeName: 'c' }] } };
  assert.equal(evalJsonPath('.status.activeEndpoints[?(@.type=="proxy")].nodeName', obj), ['b', 'c']);
  assert.equal(evalJsonPath('.status.activeEndpoints[0].nodeName', obj), ['a']);
  assert.equal(evalJsonPath('.status.activeEndpoints[*].type', obj), ['tunnel', 'proxy', 'proxy']);
  assert.equal(evalJsonPath('.spec.missing', obj), []);
  assert.is(humanDuration(5_000), '5s');
  assert.is(humanDuration(185_000), '3m5s');
  assert.is(humanDuration(3 * 3600_000 + 60_000), '3h1m');
  assert.is(humanDuration(3 * 86400_000), '3d');
});

test('CRD schema: unknown fields pruned and reported, defaults applied, violations are readable causes', () => {
  const schema = compileCrdSchema({
    type: 'object',
    properties: {
      spec: {
        type: 'object',
        required: ['size'],
        properties: { size: { type: 'integer', maximum: 3 }, mode: { type: 'string', enum: ['a', 'b'], default: 'a' }, extra: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
      },
    },
  });
  const obj: any = { apiVersion: 'x/v1', kind: 'X', metadata: { name: 'n' }, spec: { size: 2, bogus: 1, extra: { anything: true } }, junk: 1 };
  assert.equal(schema.prune(obj).sort(), ['junk', 'spec.bogus']);
  assert.equal(schema.defaultAndValidate(obj), []);
  assert.equal(obj.spec, { size: 2, extra: { anything: true }, mode: 'a' });
  const bad: any = { spec: { size: 9, mode: 'z' } };
  const causes = schema.defaultAndValidate(bad);
  assert.ok(causes.some((c) => c.field === 'spec.size' && c.message === 'Invalid value: 9: spec.size in body should be less than or equal to 3'), JSON.stringify(causes));
  assert.ok(causes.some((c) => c.field === 'spec.mode' && c.message!.startsWith('Unsupported value: "z"')), JSON.stringify(causes));
  assert.ok(schema.defaultAndValidate({ spec: {} }).some((c) => c.field === 'spec.size' && c.message === 'Required value'));
});

test('store: one global resourceVersion, history bounded, snapshots for Exact lists, 410 past compaction', () => {
  const store = new Store(5);
  const cm = store.registry.lookup('', 'v1', 'configmaps')!;
  const start = Number(store.resourceVersion);
  const a = store.create(cm, 'default', { metadata: { name: 'a' }, data: { v: '1' } }).object;
  assert.is(a.metadata.resourceVersion, String(start + 1));
  store.update(cm, 'default', 'a', { ...a, data: { v: '2' } }, undefined);
  assert.is(store.resourceVersion, String(start + 2));
  const exact = store.list(cm, 'default', { resourceVersion: String(start + 1), resourceVersionMatch: 'Exact' });
  assert.equal(exact.items.map((o) => o.data.v), ['1']);
  assert.is(exact.resourceVersion, String(start + 1));
  for (let i = 0; i < 6; i++) store.create(cm, 'default', { metadata: { name: `n${i}` } });
  assert.is(store.eventsSince(start + 1), 'expired');
  assert.is(apiError(() => store.list(cm, 'default', { resourceVersion: String(start + 1), resourceVersionMatch: 'Exact' })).code, 410);
  // NotOlderThan an old version is answered from the current state, as kube-apiserver does.
  assert.is(store.list(cm, 'default', { resourceVersion: String(start + 1), resourceVersionMatch: 'NotOlderThan' }).items.length, 7);
  const rv = store.compact();
  assert.equal(store.eventsSince(Number(rv)), []);
  assert.is(store.eventsSince(Number(rv) - 1), 'expired');
});

test('tables: CRD printer columns (first JSONPath match, like kube-apiserver), Name first, metadata rows', () => {
  const store = new Store();
  const crd = { metadata: { name: 'gateways.raven.openyurt.io' }, spec: { group: 'raven.openyurt.io', scope: 'Cluster', names: { plural: 'gateways', kind: 'Gateway' }, versions: [{ name: 'v1beta1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } }, additionalPrinterColumns: [{ name: 'Proxy', type: 'string', jsonPath: '.status.activeEndpoints[?(@.type=="proxy")].nodeName' }, { name: 'Replicas', type: 'integer', jsonPath: '.spec.proxyConfig.Replicas' }] }] } };
  const [t] = store.registry.registerCrd(crd);
  const gw = { metadata: { name: 'gw-a', creationTimestamp: '2020-01-01T00:00:00Z' }, spec: { proxyConfig: { Replicas: 2 } }, status: { activeEndpoints: [{ type: 'tunnel', nodeName: 'a' }, { type: 'proxy', nodeName: 'b' }, { type: 'proxy', nodeName: 'c' }] } };
  const table = toTable(t!, [gw, { metadata: { name: 'gw-b' } }], { resourceVersion: '7' }, 'Metadata');
  assert.equal(table.columnDefinitions.map((c: any) => [c.name, c.type]), [['Name', 'string'], ['Proxy', 'string'], ['Replicas', 'integer']]);
  assert.equal(table.rows.map((r: any) => r.cells), [['gw-a', 'b', 2], ['gw-b', null, null]]);
  assert.equal(table.rows[0].object, { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: gw.metadata });
});

test.run();
