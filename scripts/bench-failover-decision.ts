/**
 * Decision latency: from a gateway's failure becoming observable to the new status being visible
 * to a watcher. A real `raven controller` process against the embedded API server; the script
 * plays the agents. Two ways a failure becomes observable:
 *   - heartbeat expiry: the dying node's last renewTime + lease duration (2 s);
 *   - standby report: the moment a standby's "active unreachable" report is written.
 * Prints JSON lines {"name","value","unit"}: median and max over the runs.
 */
import * as k8s from '@kubernetes/client-node';
import { type Cluster, NODES, startCluster, startController, waitFor } from '../test/support/cluster-harness.ts';
import type { AgentHealth } from '../src/contract/heartbeat.ts';

const RUNS = Number(process.env.BENCH_FAILOVER_RUNS ?? 10);
const cluster: Cluster = await startCluster();
const alive = new Set(Object.keys(NODES));
const health = new Map<string, Partial<AgentHealth>>();
const lastRenew = new Map<string, number>();
let stopAgents = false;
const agentLoop = (async () => {
  while (!stopAgents) {
    await Promise.all(
      [...alive].map(async (n) => {
        const t = Date.now();
        await cluster.beat(n, health.get(n), t).catch(() => undefined);
        lastRenew.set(n, t);
      }),
    );
    await new Promise((r) => setTimeout(r, 1000));
  }
})();

// Status changes, timestamped as a watcher receives them.
const seen: { at: number; active: string }[] = [];
const watch = new k8s.Watch(cluster.kc);
const req = await watch.watch('/apis/raven.openyurt.io/v1beta1/gateways', { fieldSelector: 'metadata.name=gw-hangzhou' }, (_type, obj) => {
  const tunnel = (obj.status?.activeEndpoints ?? []).find((e: { type: string }) => e.type === 'tunnel')?.nodeName ?? '';
  seen.push({ at: Date.now(), active: tunnel });
}, () => undefined);

const controller = await startController(cluster.kubeconfigFile);
const activeNow = (): string => seen.at(-1)?.active ?? '';
await waitFor(() => activeNow() === 'hz-1', 10_000, 'first election');

const expiry: number[] = [];
const report: number[] = [];
for (let i = 0; i < RUNS; i++) {
  // Heartbeat expiry: stop the active's agent, wait for its last write to land.
  const victim = activeNow();
  const other = victim === 'hz-1' ? 'hz-2' : 'hz-1';
  alive.delete(victim);
  await new Promise((r) => setTimeout(r, 1200));
  const observable = lastRenew.get(victim)! + 2000;
  const moved = await waitFor(() => seen.find((s) => s.at >= observable - 50 && s.active === other), 8000, `failover to ${other}`);
  expiry.push(moved.at - observable);
  alive.add(victim);
  await new Promise((r) => setTimeout(r, 1500));

  // Standby report: the standby (victim, now back) reports the new active unreachable.
  const active = activeNow();
  const standby = active === 'hz-1' ? 'hz-2' : 'hz-1';
  const t = Date.now();
  health.set(standby, { activeGateway: { node: active, reachable: false, lanReachable: true, observedAt: t } });
  alive.delete(active); // the reported gateway is really dead, so it does not come back
  await cluster.beat(standby, health.get(standby), Date.now());
  const written = Date.now();
  const flipped = await waitFor(() => seen.find((s) => s.at >= written && s.active === standby), 8000, `report failover to ${standby}`);
  report.push(flipped.at - written);
  health.delete(standby);
  alive.add(active);
  await new Promise((r) => setTimeout(r, 2500));
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const out = (name: string, value: number): void => console.log(JSON.stringify({ name, value: Math.round(value), unit: 'ms' }));
out('decision_latency_heartbeat_expiry_median', median(expiry));
out('decision_latency_heartbeat_expiry_max', Math.max(...expiry));
out('decision_latency_standby_report_median', median(report));
out('decision_latency_standby_report_max', Math.max(...report));
console.error(`runs=${RUNS} expiry=${expiry.join(',')} report=${report.join(',')}`);

stopAgents = true;
await agentLoop;
req.abort();
await controller.kill();
await cluster.close();
