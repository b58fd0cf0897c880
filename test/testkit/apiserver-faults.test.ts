/** Embedded API server: watch protocol details and fault injection (500s, latency, dropped watches, compaction). */
import * as k8s from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { failure, http, sleep, startLab, waitFor, watchEvents, type Lab } from '../support/apiserver-support.ts';

let lab: Lab;
const NS = 'faults';
const CMS = `/api/v1/namespaces/${NS}/configmaps`;

test.before(async () => {
  lab = await startLab({ bookmarkIntervalMs: 50 });
  await lab.core.createNamespace({ body: { metadata: { name: NS } } });
});
test.after.each(() => lab.api.faults.clear());
test.after(async () => {
  await lab.api.close();
});

function informer(labelSelector?: string): { inf: k8s.Informer<k8s.V1ConfigMap> & k8s.ObjectCache<k8s.V1ConfigMap>; log: string[] } {
  const inf = k8s.makeInformer(lab.kc, CMS, () => lab.core.listNamespacedConfigMap({ namespace: NS, ...(labelSelector ? { labelSelector } : {}) }), labelSelector);
  const log: string[] = [];
  inf.on('add', (o) => log.push(`add ${o.metadata!.name}`));
  inf.on('update', (o) => log.push(`update ${o.metadata!.name}`));
  inf.on('delete', (o) => log.push(`delete ${o.metadata!.name}`));
  inf.on('connect', () => log.push('connect'));
  inf.on('error', (e: any) => log.push(`error ${e.code ?? e.statusCode ?? ''}`.trim()));
  return { inf, log };
}

const cm = (name: string, labels?: Record<string, string>): Promise<k8s.V1ConfigMap> => lab.core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name, ...(labels ? { labels } : {}) } } });
const listRequests = (): string[] => lab.api.requests().filter((r) => r.path === CMS && r.method === 'GET').map((r) => (r.watch ? `watch ${new URLSearchParams(r.query).get('resourceVersion')}` : 'list'));

let sentinels = 0;
/**
 * Stops an informer and waits until the server has no watch open. client-node's stop() cannot abort
 * a watch whose response it has not processed yet (it keeps the request only once watch() resolves,
 * which under load lags the server's view of an open watch), so first prove the client holds its
 * watch: an object created now must arrive through it.
 */
async function stopWatching(inf: k8s.Informer<k8s.V1ConfigMap>, log: string[], labels?: Record<string, string>): Promise<void> {
  const name = `sentinel-${++sentinels}`;
  await waitFor('watch open', () => lab.api.openWatches() === 1);
  await cm(name, labels);
  await waitFor('event through the watch', () => log.includes(`add ${name}`));
  await inf.stop();
  await waitFor('watch closed', () => lab.api.openWatches() === 0);
}

test('watch: RV absent = current state as ADDED then changes; RV given = only later events; ?watch=1 and /watch/ paths', async () => {
  const a = await cm('w-a');
  const since = a.metadata!.resourceVersion!;
  const fromScratch = watchEvents(lab.api, `${CMS}?watch=1&fieldSelector=metadata.name%3Dw-b`, (ev) => ev.length >= 2);
  const fromRv = watchEvents(lab.api, `/api/v1/watch/namespaces/${NS}/configmaps?resourceVersion=${since}`, (ev) => ev.length >= 2);
  await waitFor('watches', () => lab.api.openWatches() >= 2);
  const b = await cm('w-b');
  await lab.core.patchNamespacedConfigMap({ name: 'w-b', namespace: NS, body: { data: { x: '1' } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
  const s = await fromScratch;
  assert.equal(s.map((e) => `${e.type} ${e.object.metadata.name}`), ['ADDED w-b', 'MODIFIED w-b']);
  assert.is(s[0].object.kind, 'ConfigMap');
  assert.is(s[0].object.metadata.resourceVersion, b.metadata!.resourceVersion);
  const r = await fromRv;
  assert.equal(r.map((e) => `${e.type} ${e.object.metadata.name}`), ['ADDED w-b', 'MODIFIED w-b'], 'w-a is older than the resourceVersion');
  const initial = await watchEvents(lab.api, `${CMS}?watch=true&resourceVersion=0`, (ev) => ev.length >= 2);
  assert.equal(initial.map((e) => `${e.type} ${e.object.metadata.name}`), ['ADDED w-a', 'ADDED w-b']);
});

test('watch: sendInitialEvents replays the state, then the initial-events-end bookmark', async () => {
  const events = await watchEvents(lab.api, `${CMS}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=&fieldSelector=metadata.name%3Dw-a`, (ev) => ev.some((e) => e.type === 'BOOKMARK'));
  assert.equal(events.map((e) => e.type), ['ADDED', 'BOOKMARK']);
  assert.is(events[1].object.metadata.annotations['k8s.io/initial-events-end'], 'true');
});

test('watch: bookmarks carry the current resourceVersion; timeoutSeconds ends the stream', async () => {
  const events = await watchEvents(lab.api, `${CMS}?watch=1&allowWatchBookmarks=true&resourceVersion=${lab.api.resourceVersion()}`, (ev) => ev.some((e) => e.type === 'BOOKMARK'));
  const bm = events.find((e) => e.type === 'BOOKMARK');
  assert.equal(bm.object, { kind: 'ConfigMap', apiVersion: 'v1', metadata: { resourceVersion: lab.api.resourceVersion() } });
  const t0 = Date.now();
  const ended = await watchEvents(lab.api, `${CMS}?watch=1&timeoutSeconds=1&resourceVersion=${lab.api.resourceVersion()}`, () => false, 4000);
  const took = Date.now() - t0;
  assert.equal(ended, []);
  assert.ok(took >= 900 && took < 3000, `stream ended after ${took} ms`);
});

test('compaction: watch from an older resourceVersion gets ERROR 410 Expired, as does an Exact list', async () => {
  const old = (await cm('c-old')).metadata!.resourceVersion!;
  await cm('c-new');
  const rv = lab.api.faults.compact();
  assert.is(rv, lab.api.resourceVersion());
  const events = await watchEvents(lab.api, `${CMS}?watch=1&resourceVersion=${old}`, () => false);
  assert.is(events.length, 1, 'one ERROR, then the server closes the stream');
  assert.is(events[0].type, 'ERROR');
  assert.equal({ ...events[0].object, message: undefined }, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: undefined, reason: 'Expired', code: 410 });
  assert.match(events[0].object.message, `too old resource version: ${old}`);
  const raw: any[] = [];
  await new Promise<void>((resolve) => void new k8s.Watch(lab.kc).watch(CMS, { resourceVersion: old }, (type, obj) => raw.push([type, obj.code]), () => resolve()));
  assert.equal(raw, [['ERROR', 410]], 'client-node Watch delivers the 410 to its callback');
  const list = await http(lab.api, 'GET', `${CMS}?resourceVersion=${old}&resourceVersionMatch=Exact`);
  assert.equal([list.status, list.json.reason], [410, 'Expired']);
  assert.is((await http(lab.api, 'GET', `${CMS}?resourceVersion=${rv}`)).status, 200);
});

test('history limit: a watch from before the last N events is expired', async () => {
  const small = await startLab({ historyLimit: 3 });
  try {
    const start = small.api.resourceVersion();
    for (let i = 0; i < 4; i++) await small.core.createNamespacedConfigMap({ namespace: 'default', body: { metadata: { name: `h${i}` } } });
    const expired = await watchEvents(small.api, `/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=${start}`, () => false);
    assert.equal(expired.map((e) => [e.type, e.object.code]), [['ERROR', 410]]);
    const ok = await watchEvents(small.api, `/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=${Number(start) + 1}`, (ev) => ev.length >= 3);
    assert.equal(ok.map((e) => e.object.metadata.name), ['h1', 'h2', 'h3']);
  } finally {
    await small.api.close();
  }
});

test('informer after compaction: the in-stream 410 makes it relist (no "error" event) and catch up', async () => {
  const { inf, log } = informer('suite=compact');
  await cm('k-1', { suite: 'compact' });
  await inf.start();
  await waitFor('initial add', () => log.includes('add k-1'));
  lab.api.clearRequests();
  // Hold the informer's reconnect, change things meanwhile, and compact past its resourceVersion.
  lab.api.faults.setLatency(200, { path: CMS, watch: true });
  assert.is(lab.api.faults.dropWatches('end'), 1);
  await cm('k-2', { suite: 'compact' });
  await lab.core.deleteNamespacedConfigMap({ name: 'k-1', namespace: NS });
  lab.api.faults.compact();
  await waitFor('relist catches up', () => log.includes('add k-2') && log.includes('delete k-1'), 3000);
  lab.api.faults.setLatency(0, { path: CMS, watch: true });
  const reqs = listRequests();
  assert.is(reqs[0]!.startsWith('watch '), true, reqs.join(', '));
  assert.is(reqs[1], 'list', `relisted after the 410: ${reqs.join(', ')}`);
  assert.not.ok(log.some((l) => l.startsWith('error')), log.join(', '));
  assert.equal(inf.list(NS).map((o) => o.metadata!.name), ['k-2']);
  await stopWatching(inf, log, { suite: 'compact' });
});

test('injected 500s: fail the next N matching requests with a Status, then recover', async () => {
  const handle = lab.api.faults.failNext({ method: 'GET', path: CMS, watch: false, status: 500, count: 2 });
  for (let i = 0; i < 2; i++) {
    const f = await failure(lab.core.listNamespacedConfigMap({ namespace: NS }));
    assert.equal([f.code, f.status.kind, f.status.reason], [500, 'Status', 'InternalError']);
  }
  assert.equal([handle.hits, handle.remaining], [2, 0]);
  await lab.core.listNamespacedConfigMap({ namespace: NS });
  const writes = lab.api.faults.failNext({ method: 'POST', path: /configmaps$/, status: 503, retryAfterSeconds: 2 });
  const f = await failure(cm('never'));
  assert.equal([f.code, f.status.reason], [503, 'ServiceUnavailable']);
  assert.is(writes.remaining, 0);
  assert.is((await failure(lab.core.readNamespacedConfigMap({ name: 'never', namespace: NS }))).code, 404, 'the failed create did nothing');
});

test('injected 500 on the informer list: "error" event, informer stops; start() again recovers', async () => {
  const { inf, log } = informer();
  lab.api.faults.failNext({ method: 'GET', path: CMS, watch: false, status: 500 });
  await inf.start();
  await waitFor('error', () => log.includes('error 500'));
  await sleep(100);
  assert.equal(log, ['connect', 'error 500'], 'client-node does not retry by itself');
  await inf.start();
  await waitFor('recovered', () => log.includes('add w-a'));
  await stopWatching(inf, log);
});

test('dropped watches: a clean end resumes from the last resourceVersion; a reset surfaces as an informer error', async () => {
  const { inf, log } = informer('suite=drop');
  await cm('d-1', { suite: 'drop' });
  await inf.start();
  await waitFor('add', () => log.includes('add d-1'));
  await waitFor('watching', () => lab.api.openWatches() === 1);
  lab.api.clearRequests();
  assert.is(lab.api.faults.dropWatches('end'), 1);
  await waitFor('reconnect', () => lab.api.openWatches() === 1 && listRequests().length === 1);
  await cm('d-2', { suite: 'drop' });
  await waitFor('event after reconnect', () => log.includes('add d-2'));
  assert.equal(listRequests().map((r) => r.split(' ')[0]), ['watch'], 'resumed with a watch, no relist');
  assert.is(lab.api.faults.dropWatches('reset'), 1);
  await waitFor('error', () => log.some((l) => l.startsWith('error')));
  assert.is(lab.api.openWatches(), 0);
  await inf.start();
  await cm('d-3', { suite: 'drop' });
  await waitFor('after restart', () => log.includes('add d-3'));
  await stopWatching(inf, log, { suite: 'drop' });
});

test('latency: matching requests are delayed, others are not', async () => {
  lab.api.faults.setLatency(150, { method: 'GET', path: `${CMS}/w-a` });
  let t0 = Date.now();
  await lab.core.readNamespacedConfigMap({ name: 'w-a', namespace: NS });
  assert.ok(Date.now() - t0 >= 140, `${Date.now() - t0} ms`);
  t0 = Date.now();
  await lab.core.readNamespacedConfigMap({ name: 'w-b', namespace: NS });
  assert.ok(Date.now() - t0 < 140, `${Date.now() - t0} ms`);
});

test.run();
