/**
 * `raven lab check`: pings every pod pair and node pair, within and across regions, and says which
 * path each takes (local, direct, edge-to-edge, relayed) from the Gateways' status, by the mesh
 * model the agents plan with (src/topology/mesh.ts). A pair "should connect" when it is in one region, or across regions for pods
 * (nodes too with forwardNodeIP) when the topology enables the L3 tunnel: a region left without an
 * active gateway makes its pairs fail, which is what a check is for.
 */
import type { CommandRunner } from '../platform/command-runner.js';
import { type Gateway, parseGateway } from '../contract/gateway.js';
import { buildMesh, gatewayOf, type Mesh, type MeshGateway } from '../topology/mesh.js';
import type { LabNode } from './layout.js';
import type { LabRecord } from './state.js';

export interface PairResult {
  readonly kind: 'pod' | 'node';
  readonly from: string;
  readonly to: string;
  readonly fromRegion: string;
  readonly toRegion: string;
  readonly path: string;
  readonly expected: boolean;
  readonly sent: number;
  readonly received: number;
  readonly rttMs?: number;
}

export interface CheckOptions {
  readonly count: number;
  readonly intervalS: number;
  readonly concurrency: number;
  /** Only these kinds (default both). */
  readonly kinds?: readonly ('pod' | 'node')[];
  /** Skip nodes that are failed (`raven lab fail`): they are expected to be unreachable. */
  readonly skip?: ReadonlySet<string>;
}

/** The lab's mesh, from the Gateways as the agents read them (parsed; what does not parse is left out). */
export function labMesh(record: Pick<LabRecord, 'natTraversal'>, gateways: readonly Gateway[]): Mesh<MeshGateway> {
  const parsed = gateways.flatMap((g) => parseGateway(g).gateway ?? []);
  return buildMesh(parsed.map(gatewayOf), { natTraversal: record.natTraversal });
}

/** The path traffic from `a`'s region to `b`'s takes. */
export function pathBetween(record: Pick<LabRecord, 'l3Tunnel'>, mesh: Mesh<MeshGateway>, a: Pick<LabNode, 'region'>, b: Pick<LabNode, 'region'>): string {
  if (a.region === b.region) return 'local';
  if (!record.l3Tunnel) return 'no l3 tunnel';
  const gwA = mesh.gateways.find((g) => g.name === `gw-${a.region}`);
  const gwB = mesh.gateways.find((g) => g.name === `gw-${b.region}`);
  if (!gwA?.active || !gwB?.active) return `no active gateway in ${!gwA?.active ? a.region : b.region}`;
  const path = mesh.pathBetween(gwA, gwB);
  return path.kind === 'relayed' ? `relayed via ${path.via.name}` : path.kind === 'none' ? 'no path' : path.kind;
}

export async function checkLab(record: LabRecord, gateways: readonly Gateway[], runner: CommandRunner, o: CheckOptions): Promise<PairResult[]> {
  const nodes = record.plan.nodes.filter((n) => !o.skip?.has(n.name));
  const kinds = o.kinds ?? ['pod', 'node'];
  const jobs: (() => Promise<PairResult>)[] = [];
  const mesh = labMesh(record, gateways);
  for (const kind of kinds) {
    for (const a of nodes) {
      for (const b of nodes) {
        if (a === b) continue;
        const path = pathBetween(record, mesh, a, b);
        const crossNode = kind === 'node' && a.region !== b.region;
        // What the topology asks for, whatever the cluster's state: a region without an active
        // gateway is a failure to see, not a reason to expect less.
        const expected = a.region === b.region || (record.l3Tunnel && (kind === 'pod' || record.forwardNodeIP));
        const base = { kind, from: a.name, to: b.name, fromRegion: a.region, toRegion: b.region, path: crossNode && !record.forwardNodeIP ? 'not routed (forwardNodeIP off)' : path, expected };
        if (crossNode && !record.forwardNodeIP) {
          jobs.push(async () => ({ ...base, sent: 0, received: 0 }));
          continue;
        }
        const [ns, src, dst] = kind === 'pod' ? [a.podNetns, a.podIP, b.podIP] : [a.netns, a.lanIP, b.lanIP];
        jobs.push(async () => {
          const r = await runner.run('ip', ['netns', 'exec', ns, 'ping', '-n', '-q', '-c', String(o.count), '-i', String(o.intervalS), '-W', '1', '-I', src, dst]);
          const m = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
          const avg = /= [\d.]+\/([\d.]+)\//.exec(r.stdout);
          return { ...base, sent: m ? Number(m[1]) : o.count, received: m ? Number(m[2]) : 0, ...(avg && { rttMs: Number(avg[1]) }) };
        });
      }
    }
  }
  const results: PairResult[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(o.concurrency, jobs.length) }, async () => {
      for (;;) {
        const i = next++;
        if (i >= jobs.length) return;
        results[i] = await jobs[i]!();
      }
    }),
  );
  return results;
}

/** A pair that should connect and lost every probe, or one that should not and got through. */
export function failures(results: readonly PairResult[]): PairResult[] {
  return results.filter((r) => (r.expected ? r.received === 0 : r.received > 0));
}

/** The report: a region × region summary, then every pair that failed (all pairs with `verbose`). */
export function formatCheck(results: readonly PairResult[], verbose: boolean): string {
  const lines: string[] = [];
  const regions = [...new Set(results.flatMap((r) => [r.fromRegion, r.toRegion]))].sort();
  for (const kind of ['pod', 'node'] as const) {
    const of = results.filter((r) => r.kind === kind);
    if (!of.length) continue;
    const cells = regions.map((from) =>
      regions.map((to) => {
        const cell = of.filter((r) => r.fromRegion === from && r.toRegion === to);
        if (!cell.length) return '-';
        if (cell.every((r) => r.sent === 0)) return cell[0]!.path;
        const ok = cell.filter((r) => r.received > 0).length;
        const rtts = cell.flatMap((r) => (r.rttMs !== undefined ? [r.rttMs] : []));
        const rtt = rtts.length ? ` ${(rtts.reduce((x, y) => x + y, 0) / rtts.length).toFixed(2)}ms` : '';
        return `${ok}/${cell.length}${rtt} ${cell[0]!.path}`;
      }),
    );
    const width = Math.max(...regions.map((r) => r.length), ...cells.flat().map((c) => c.length)) + 2;
    const first = Math.max(...regions.map((r) => r.length)) + 2;
    lines.push(`${kind}s (ok/pairs, avg RTT, path; rows send, columns answer):`);
    lines.push(''.padEnd(first) + regions.map((r) => r.padEnd(width)).join('').trimEnd());
    for (const [i, from] of regions.entries()) lines.push((from.padEnd(first) + cells[i]!.map((c) => c.padEnd(width)).join('')).trimEnd());
    lines.push('');
  }
  const shown = verbose ? results : failures(results);
  for (const r of shown) {
    const loss = r.sent ? `${Math.round((100 * (r.sent - r.received)) / r.sent)}% loss` : 'not probed';
    lines.push(`${failures([r]).length ? 'FAIL' : 'ok  '} ${r.kind} ${r.from} (${r.fromRegion}) -> ${r.to} (${r.toRegion}): ${loss}${r.rttMs !== undefined ? `, ${r.rttMs.toFixed(2)} ms` : ''}, ${r.path}${r.expected ? '' : ', not expected to connect'}`);
  }
  const bad = failures(results).length;
  lines.push(bad ? `${bad} of ${results.length} pairs failed` : `all ${results.filter((r) => r.sent > 0).length} probed pairs as expected (${results.filter((r) => r.sent === 0).length} not routed by design)`);
  return lines.join('\n') + '\n';
}
