/**
 * Election benchmark: one full pass (membership of every node, election and status of every
 * Gateway) over 10,000 nodes in 1,000 Gateways. Prints JSON lines {"name","value","unit"}.
 * Half the Gateways select members by node-pool label, half name them explicitly. Also the
 * cluster-wide heartbeat-disruption check the controller makes once per reconcile.
 */
import type { Gateway, NodeLike } from '../src/contract/gateway.ts';
import type { Heartbeat } from '../src/contract/heartbeat.ts';
import { assignNodes } from '../src/controller/membership.ts';
import { clusterCandidates, elect, heartbeatDisruption } from '../src/controller/election.ts';
import { gatewayStatus } from '../src/controller/status.ts';

const GATEWAYS = 1000;
const PER = 10;
const now = 1_800_000_000_000;

const gateways: Gateway[] = [];
const nodes: NodeLike[] = [];
const heartbeats = new Map<string, Heartbeat>();
for (let g = 0; g < GATEWAYS; g++) {
  const name = `gw-r${g}`;
  const names = Array.from({ length: PER }, (_, i) => `r${g}-n${i}`);
  const bySelector = g % 2 === 0;
  gateways.push({
    metadata: { name, ...(!bySelector && { annotations: { 'raven-gitops.io/member-nodes': names.join(',') } }) },
    spec: {
      ...(bySelector && { nodeSelector: { matchLabels: { 'apps.openyurt.io/nodepool': `r${g}` } } }),
      tunnelConfig: { Replicas: 1 },
      proxyConfig: { Replicas: 1 },
      endpoints: names.slice(0, 2).flatMap((n) => [{ nodeName: n, type: 'tunnel' as const, port: 4500 }, { nodeName: n, type: 'proxy' as const, port: 10262 }]),
    },
    status: { activeEndpoints: [{ nodeName: names[1]!, type: 'tunnel' }] },
  });
  names.forEach((n, i) => {
    nodes.push({
      metadata: { name: n, labels: { 'apps.openyurt.io/nodepool': `r${g}`, 'kubernetes.io/hostname': n } },
      spec: { podCIDRs: [`10.${g >> 4}.${((g & 15) << 4) | i}.0/24`] },
      status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: `192.168.${g % 250}.${i + 1}` }] },
    });
    heartbeats.set(n, { node: n, renewTime: now - 300, leaseDurationSeconds: 2, health: { backendUp: true, peers: {} } });
  });
}
const byName = new Map(nodes.map((n) => [n.metadata.name, n]));

function pass(): { assignMs: number; electMs: number; totalMs: number; active: number } {
  const t0 = performance.now();
  const { byNode } = assignNodes(gateways, nodes);
  const t1 = performance.now();
  const members = new Map<string, NodeLike[]>();
  for (const [node, gw] of byNode) (members.get(gw) ?? members.set(gw, []).get(gw)!).push(byName.get(node)!);
  let active = 0;
  for (const gw of gateways) {
    const r = elect({ gateway: gw, nodes: byName, memberOf: byNode, heartbeats, features: { l3Tunnel: true, l7Proxy: true }, now });
    gatewayStatus(gw, members.get(gw.metadata.name) ?? [], r.active);
    active += r.active.length;
  }
  const t2 = performance.now();
  return { assignMs: t1 - t0, electMs: t2 - t1, totalMs: t2 - t0, active };
}

const runs = Array.from({ length: 9 }, pass);
if (runs.some((r) => r.active !== GATEWAYS * 2)) throw new Error(`expected ${GATEWAYS * 2} active endpoints, got ${runs[0]!.active}`);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const out = (name: string, value: number, unit: string): void => console.log(JSON.stringify({ name, value: Math.round(value * 10) / 10, unit }));
out('election_full_pass_10000n_1000gw_cold', runs[0]!.totalMs, 'ms');
out('election_full_pass_10000n_1000gw', median(runs.map((r) => r.totalMs)), 'ms');
out('election_membership_10000n_1000gw', median(runs.map((r) => r.assignMs)), 'ms');
out('election_elect_and_status_1000gw', median(runs.map((r) => r.electMs)), 'ms');

// The controller checks for a heartbeat disruption once per reconcile, over the whole cluster's candidates.
const { byNode } = assignNodes(gateways, nodes);
const disruption = Array.from({ length: 9 }, () => {
  const t0 = performance.now();
  const d = heartbeatDisruption(clusterCandidates(gateways, byNode), heartbeats, now);
  if (d.disrupted || d.candidates !== GATEWAYS * 2) throw new Error(`unexpected disruption check: ${d.evidence}`);
  return performance.now() - t0;
});
out('election_disruption_check_2000_candidates', median(disruption), 'ms');
