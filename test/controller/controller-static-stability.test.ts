/**
 * Static stability of the real controller process against the embedded API server: an API outage
 * longer than the heartbeat lease and a controller restart onto stale-looking Leases change no
 * gateway; one gateway whose heartbeat really stops while the others renew still fails over.
 * "No change" is counted where it matters: successful Gateway status writes.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { activeOf, type Cluster, type ControllerProcess, metric, NODES, startCluster, startController, waitFor } from '../support/cluster-harness.ts';

const GATEWAYS = ['gw-cloud', 'gw-hangzhou', 'gw-qingdao'];
let cluster: Cluster;
let controller: ControllerProcess;
const alive = new Set(Object.keys(NODES));
/** Agents that cannot reach the API write nothing. */
let apiDown = false;
let agents: NodeJS.Timeout | undefined;

function runAgents(): void {
  const tick = async (): Promise<void> => {
    if (!apiDown) await Promise.all([...alive].map((n) => cluster.beat(n).catch(() => undefined)));
    agents = setTimeout(() => void tick(), 300);
  };
  void tick();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const statusWrites = (): string[] =>
  cluster.api.requests().filter((r) => r.method === 'PUT' && /\/gateways\/[^/]+\/status$/.test(r.path) && r.status === 200).map((r) => r.path);
async function actives(): Promise<Record<string, string[]>> {
  return Object.fromEntries(await Promise.all(GATEWAYS.map(async (g) => [g, activeOf(await cluster.gateway(g))] as const)));
}
const start = (): Promise<ControllerProcess> => startController(cluster.kubeconfigFile);

test.before(async () => {
  cluster = await startCluster();
  runAgents();
  controller = await start();
  await waitFor(async () => Object.values(await actives()).every((a) => a.length === 2), 10_000, () => `every region elected; controller said:\n${controller.logs()}`);
});

test.after(async () => {
  clearTimeout(agents);
  await controller?.kill();
  await cluster?.close();
});

test('the API paused for longer than the heartbeat lease (requests held, as under SIGSTOP), then back: no gateway changes', async () => {
  const before = await actives();
  cluster.api.clearRequests();
  // Every request is held for 4 s before it is handled, the open watches go silent (reset, and their
  // reconnects are held too), agents cannot renew. A status write decided during the pause lands after it.
  apiDown = true;
  cluster.api.faults.setLatency(4000);
  cluster.api.faults.dropWatches('reset');
  await sleep(4000);
  cluster.api.faults.setLatency(0);
  apiDown = false;
  // The held requests drain; the disruption ends once heartbeats are fresh; then the grace passes.
  await sleep(4500);
  await waitFor(async () => metric(await controller.metrics(), 'raven_controller_heartbeat_disruption') === 0, 10_000, 'the disruption to end');
  await sleep(3000);
  assert.equal(statusWrites(), [], `status writes after the pause; controller said:\n${controller.logs().slice(-4000)}`);
  assert.equal(await actives(), before);
  assert.match(controller.logs(), /heartbeat disruption: a large share of the cluster's heartbeats lapsed together/);
  assert.match(controller.logs(), /held back a failover/);
  const events = await waitFor(async () => {
    const list = (await cluster.core.listNamespacedEvent({ namespace: 'raven-system' })).items.filter((e) => e.reason === 'HeartbeatDisruption');
    return list.length ? list : undefined;
  }, 5000, 'the HeartbeatDisruption event');
  assert.is(events.length, 1, 'one HeartbeatDisruption event');
  assert.match(events[0]!.message ?? '', /gateway candidates missed their heartbeat renewal/);
});

test('the API failing every request for longer than the heartbeat lease, then back: no gateway changes', async () => {
  const before = await actives();
  const heldBefore = metric(await controller.metrics(), 'raven_controller_held_failovers_total{reason="disruption"}');
  cluster.api.clearRequests();
  // The API answers nothing useful: every request fails, open watches break, agents cannot renew.
  apiDown = true;
  const outage = cluster.api.faults.failNext({ count: 1_000_000, status: 503 });
  cluster.api.faults.dropWatches('reset');
  await sleep(4000);
  outage.cancel();
  apiDown = false;
  await waitFor(async () => metric(await controller.metrics(), 'raven_controller_heartbeat_disruption') === 0, 10_000, 'the disruption to end');
  // Past the grace after recovery, and a few expiry rounds.
  await sleep(4000);
  assert.equal(statusWrites(), [], `status writes after the outage; controller said:\n${controller.logs().slice(-4000)}`);
  assert.equal(await actives(), before);
  assert.is(metric(await controller.metrics(), 'raven_controller_held_failovers_total{reason="disruption"}') > heldBefore, true, 'failovers were held for the disruption');
});

test('a controller restarted onto stale-looking Leases changes nothing until fresh heartbeats arrive, then nothing either', async () => {
  const before = await actives();
  await controller.kill();
  apiDown = true;
  await sleep(2500); // every Lease has expired
  cluster.api.clearRequests();
  controller = await start();
  await waitFor(async () => metric(await controller.metrics(), 'raven_controller_heartbeat_disruption') === 1, 10_000, () => `the new controller to see a disruption; it said:\n${controller.logs()}`);
  await sleep(3000); // longer than the grace: the disruption alone holds
  assert.equal(statusWrites(), [], 'no status writes on stale evidence');
  apiDown = false;
  await waitFor(async () => metric(await controller.metrics(), 'raven_controller_heartbeat_disruption') === 0, 10_000, 'heartbeats fresh again');
  await sleep(3000);
  assert.equal(statusWrites(), [], `status writes after fresh heartbeats; controller said:\n${controller.logs().slice(-4000)}`);
  assert.equal(await actives(), before);
});

test('one gateway whose heartbeat really stops while the others renew fails over', async () => {
  const was = (await actives())['gw-hangzhou']!;
  const dead = was.includes('tunnel/hz-1') ? 'hz-1' : 'hz-2';
  const other = dead === 'hz-1' ? 'hz-2' : 'hz-1';
  alive.delete(dead);
  await waitFor(async () => activeOf(await cluster.gateway('gw-hangzhou')).includes(`tunnel/${other}`), 8000, () => `failover to ${other}; controller said:\n${controller.logs().slice(-3000)}`);
  assert.is(metric(await controller.metrics(), 'raven_controller_heartbeat_disruption'), 0);
  const rest = await actives();
  assert.equal([rest['gw-cloud'], rest['gw-qingdao']].map((a) => a!.length), [2, 2], 'the other regions keep their gateways');
  alive.add(dead);
});

test.run();
