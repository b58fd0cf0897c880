/**
 * End-to-end figures from `raven lab` (test/fixtures/lab/seed-ha-*.yaml: a public cloud with two
 * gateways, two NATed edges), per backend, as JSON lines:
 *   - lab_up_to_full_connectivity: from `lab up` to every pod pair connecting (two clean rounds);
 *   - per fault, `e2e_gap_<fault>_<region>_<backend>`: pings every 20 ms between pods of different
 *     regions while the fault is injected, held 4 s and restored; the longest time without a reply
 *     in any stream (median and max over rounds), the packets lost and the gateway changes the
 *     controller made, per round. Faults of a gateway (node, agent, tunnel daemon, UDP block, WAN
 *     uplink) hit the active one of the cloud and of hangzhou; the API outage (30 s), controller
 *     restart, rolling agent upgrade and 20 % WAN loss on the cloud for 60 s are watched on every
 *     region pair. The lab's default WAN delay is on (regions 40 ms apart);
 *   - WireGuard only: cross-region pod-to-pod TCP through the lab's tunnel vs wireguard-go
 *     configured by hand between the same two gateway namespaces (across the same NAT).
 * Needs root, wireguard-go, wg, strongSwan, nftables, iperf3. Usage: npm run bench:e2e [-- --rounds 5]
 * [--only node,agent,tunnel,udp-block,wan,api,controller,rolling,loss] [--backend wireguard,ipsec].
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { failures } from '../src/lab/check.ts';
import { gateways, labCheck, labDown, labFail, labFailApi, labFailWanLoss, labRestartController, labRestore, labRestoreWanLoss, labUp, startAgent } from '../src/lab/lab.ts';
import type { LabNode } from '../src/lab/layout.ts';
import type { LabState, NodeFault } from '../src/lab/state.ts';

const arg = (flag: string): string | undefined => (process.argv.includes(flag) ? process.argv[process.argv.indexOf(flag) + 1] : undefined);
const rounds = Number(arg('--rounds')) || 5;
/** `--only node,api,...`: only these faults (and no throughput run). */
const only = arg('--only')?.split(',');
const backends = (arg('--backend') ?? 'wireguard,ipsec').split(',') as ('wireguard' | 'ipsec')[];
const runDir = mkdtempSync(join(tmpdir(), 'raven-bench-e2e-'));
const quiet = { stdout: () => undefined, stderr: (s: string) => process.stderr.write(s) };
const out = (name: string, value: number, unit: string, extra: Record<string, string | number> = {}): void => console.log(JSON.stringify({ name, value: Math.round(value * 100) / 100, unit, ...extra }));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function settled(state: LabState): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (!failures(await labCheck(state, { count: 1, kinds: ['pod'] })).length) return;
    await sleep(200);
  }
  throw new Error('the lab did not settle');
}

async function activeOf(state: LabState, region: string): Promise<string> {
  const gw = (await gateways(state)).find((g) => g.metadata.name === `gw-${region}`);
  const n = gw?.status?.activeEndpoints?.find((e) => e.type === 'tunnel')?.nodeName;
  if (!n) throw new Error(`no active gateway in ${region}`);
  return n;
}

/** A ping stream between two pods, every 20 ms, with kernel timestamps (`ping -D`). */
interface Stream {
  readonly name: string;
  readonly ping: ChildProcess;
  text: string;
}

function startStream(from: LabNode, to: LabNode): Stream {
  const ping = spawn('ip', ['netns', 'exec', from.podNetns, 'ping', '-D', '-n', '-i', '0.02', '-W', '1', to.podIP], { stdio: ['ignore', 'pipe', 'ignore'] });
  const s: Stream = { name: `${from.name}->${to.name}`, ping, text: '' };
  ping.stdout!.on('data', (d) => (s.text += d));
  return s;
}

/** The longest time without a reply (ms) and the packets lost, between `from` and `to` (epoch seconds). */
function streamStats(s: Stream, from: number, to: number): { gapMs: number; lost: number } {
  const replies = [...s.text.matchAll(/^\[(\d+\.\d+)\] .*icmp_seq=(\d+)/gm)].map((m) => ({ at: Number(m[1]), seq: Number(m[2]) })).filter((r) => r.at >= from && r.at <= to);
  if (replies.length < 2) return { gapMs: (to - from) * 1000, lost: Math.round((to - from) / 0.02) };
  let gap = replies[0]!.at - from;
  for (let i = 1; i < replies.length; i++) gap = Math.max(gap, replies[i]!.at - replies[i - 1]!.at);
  gap = Math.max(gap, to - replies.at(-1)!.at);
  const lost = replies.at(-1)!.seq - replies[0]!.seq + 1 - new Set(replies.map((r) => r.seq)).size;
  return { gapMs: gap * 1000, lost };
}

/** Gateway elections the controller logged so far (each change of an active tunnel endpoint is one). */
function elections(state: LabState): number {
  return (readFileSync(state.log('controller'), 'utf8').match(/elected active tunnel endpoint/g) ?? []).length;
}

interface Round {
  readonly gapMs: number;
  readonly lost: number;
  readonly changes: number;
}

/**
 * One round: ping streams between `pairs` for a second, `fault` (inject, hold, restore: one
 * function), two seconds more; then the longest gap in any stream, the packets lost and the
 * gateway changes the controller made meanwhile.
 */
async function round(state: LabState, pairs: readonly [LabNode, LabNode][], fault: () => Promise<void>): Promise<Round> {
  const streams = pairs.map(([a, b]) => startStream(a, b));
  const before = elections(state);
  try {
    await sleep(1000);
    const from = Date.now() / 1000;
    await fault();
    await sleep(2000);
    const to = Date.now() / 1000;
    const stats = streams.map((s) => streamStats(s, from, to));
    return { gapMs: Math.max(...stats.map((x) => x.gapMs)), lost: stats.reduce((n, x) => n + x.lost, 0), changes: elections(state) - before };
  } finally {
    for (const s of streams) s.ping.kill('SIGTERM');
  }
}

/** A fault held this long before it is restored: recovery (≤ 1 s) shows well inside it. */
const HOLD_MS = 4000;
/** Data-path failovers of one Gateway are 30 s apart at least (DATAPATH_HOLD_DOWN_MS): rounds wait it out. */
const DATA_PATH_SPACING_MS = 31_000;

function iperf(clientNs: string, bind: string, server: string): number {
  const r = spawnSync('ip', ['netns', 'exec', clientNs, 'iperf3', '-c', server, '-B', bind, '-t', '4', '-J'], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`iperf3 from ${clientNs} to ${server} failed (${r.status ?? r.signal}): ${r.stdout.slice(0, 300)} ${r.stderr.slice(0, 300)}`);
  return JSON.parse(r.stdout).end.sum_received.bits_per_second / 1e6;
}

/**
 * Cross-region pod-to-pod TCP through the lab's tunnel vs a hand-made wireguard-go pair between
 * the same two gateway namespaces, carrying the same two pods (a second address on each, routed
 * by hand): the same hops, NAT and CPU, only the tunnel's configuration differs.
 */
async function throughput(state: LabState): Promise<void> {
  const rec = state.read();
  const node = (n: string) => rec.plan.nodes.find((x) => x.name === n)!;
  const [cloud, hz] = [node(await activeOf(state, 'cloud')), node(await activeOf(state, 'hangzhou'))];
  const procs: ChildProcess[] = [];
  const raw = { cloud: 'rwbench0', hz: 'rwbench1' };
  const pods = { cloud: '10.255.1.2', hz: '10.255.1.1' };
  const env = { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' };
  const run = (cmd: string, args: string[], input?: string): string => {
    const r = spawnSync(cmd, args, { input, encoding: 'utf8', env });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  try {
    for (const [ns, dev] of [[cloud.netns, raw.cloud], [hz.netns, raw.hz]] as const) run('ip', ['netns', 'exec', ns, 'wireguard-go', dev]);
    const dir = mkdtempSync(join(tmpdir(), 'raven-bench-keys-'));
    const [kc, kh] = [join(dir, 'cloud'), join(dir, 'hz')];
    writeFileSync(kc, run('wg', ['genkey']), { mode: 0o600 });
    writeFileSync(kh, run('wg', ['genkey']), { mode: 0o600 });
    const pub = (f: string) => run('wg', ['pubkey'], readFileSync(f, 'utf8'));
    run('ip', ['netns', 'exec', cloud.netns, 'wg', 'set', raw.cloud, 'listen-port', '51900', 'private-key', kc, 'peer', pub(kh), 'allowed-ips', `${pods.hz}/32`]);
    run('ip', ['netns', 'exec', hz.netns, 'wg', 'set', raw.hz, 'private-key', kh, 'peer', pub(kc), 'endpoint', `${cloud.publicIP}:51900`, 'persistent-keepalive', '5', 'allowed-ips', `${pods.cloud}/32`]);
    rmSync(dir, { recursive: true, force: true });
    for (const [n, dev, mine, theirs] of [[cloud, raw.cloud, pods.cloud, pods.hz], [hz, raw.hz, pods.hz, pods.cloud]] as const) {
      run('ip', ['-n', n.netns, 'link', 'set', dev, 'mtu', '1420', 'up']);
      run('ip', ['-n', n.netns, 'route', 'add', `${theirs}/32`, 'dev', dev, 'mtu', 'lock', '1420']);
      run('ip', ['-n', n.netns, 'route', 'add', `${mine}/32`, 'dev', 'pod0']);
      run('ip', ['-n', n.podNetns, 'addr', 'add', `${mine}/32`, 'dev', 'eth0']);
    }
    procs.push(spawn('ip', ['netns', 'exec', cloud.podNetns, 'iperf3', '-s'], { stdio: 'ignore' }));
    await sleep(500);
    run('ip', ['netns', 'exec', hz.podNetns, 'ping', '-c', '3', '-i', '0.2', '-I', pods.hz, pods.cloud]);
    const results = { lab: [] as number[], raw: [] as number[] };
    for (let i = 0; i < 3; i++) {
      results.lab.push(iperf(hz.podNetns, hz.podIP, cloud.podIP));
      results.raw.push(iperf(hz.podNetns, pods.hz, pods.cloud));
    }
    out('lab_cross_region_pod_throughput_wireguard', median(results.lab), 'Mbit/s', { runs: results.lab.map(Math.round).join(',') });
    out('lab_raw_wireguard_same_pods_throughput', median(results.raw), 'Mbit/s', { runs: results.raw.map(Math.round).join(',') });
    out('lab_over_raw_throughput_ratio_wireguard', median(results.lab) / median(results.raw), 'ratio');
  } finally {
    for (const p of procs) p.kill('SIGTERM');
    for (const [n, dev, mine] of [[cloud, raw.cloud, pods.cloud], [hz, raw.hz, pods.hz]] as const) {
      spawnSync('ip', ['-n', n.netns, 'link', 'del', dev]);
      spawnSync('ip', ['-n', n.netns, 'route', 'del', `${mine}/32`, 'dev', 'pod0']);
      spawnSync('ip', ['-n', n.podNetns, 'addr', 'del', `${mine}/32`, 'dev', 'eth0']);
    }
  }
}

async function backend(b: 'wireguard' | 'ipsec'): Promise<void> {
  const name = `bench${b[0]}`;
  const t0 = Date.now();
  const { state, connectedMs } = await labUp({ file: `test/fixtures/lab/seed-ha-${b}.yaml`, name, runDir, nodesPerRegion: 2, symmetricNAT: false, wanLossPercent: 0, sameEdgeLAN: false, waitMs: 120_000 }, quiet);
  try {
    out(`lab_up_to_full_connectivity_${b}`, (connectedMs ?? Date.now() - t0) / 1000, 's', { nodes: state.read().plan.nodes.length, wan_delay_ms: state.read().plan.regions[0]!.wanDelayMs });
    if (b === 'wireguard' && !only) {
      await settled(state);
      await throughput(state);
    }
    const rec = state.read();
    const node = (n: string): LabNode => rec.plan.nodes.find((x) => x.name === n)!;
    const inRegion = (region: string): LabNode[] => rec.plan.nodes.filter((n) => n.region === region);
    const results = new Map<string, Round[]>();
    const record = (key: string, r: Round): void => void results.set(key, [...(results.get(key) ?? []), r]);
    const lastDataPath = new Map<string, number>();

    /** Streams towards a surviving pod of `region` from a pod of each other region (qingdao's from a non-gateway node). */
    const towards = (region: string, victim: string): [LabNode, LabNode][] => {
      const target = inRegion(region).find((n) => n.name !== victim)!;
      const sources = rec.plan.regions.filter((r) => r.name !== region).map((r) => inRegion(r.name).find((n) => n.name !== victim && !n.publicIP) ?? inRegion(r.name)[0]!);
      return sources.map((s) => [s, target]);
    };
    const everyRegion: [LabNode, LabNode][] = [[node('hz-3'), node('cloud-gw-2')], [node('qd-2'), node('cloud-gw-1')], [node('hz-3'), node('qd-2')]];

    const gatewayFaults: { fault: NodeFault; regions: string[] }[] = [
      { fault: 'node', regions: ['cloud', 'hangzhou'] },
      { fault: 'agent', regions: ['cloud', 'hangzhou'] },
      { fault: 'tunnel', regions: ['cloud', 'hangzhou'] },
      { fault: 'udp-block', regions: ['cloud', 'hangzhou'] },
      // A NATed region's candidates share its router's uplink: only the cloud's gateways have their own.
      { fault: 'wan', regions: ['cloud'] },
    ];
    for (let i = 0; i < rounds; i++) {
      for (const { fault, regions } of gatewayFaults) {
        if (only && !only.includes(fault)) continue;
        for (const region of regions) {
          await settled(state);
          if (fault === 'udp-block' || fault === 'wan') {
            const wait = (lastDataPath.get(region) ?? 0) + DATA_PATH_SPACING_MS - Date.now();
            if (wait > 0) await sleep(wait);
          }
          const victim = await activeOf(state, region);
          record(`${fault}_${region}`, await round(state, towards(region, victim), async () => {
            await labFail(state, victim, fault);
            await sleep(HOLD_MS);
            if (fault === 'udp-block' || fault === 'wan') lastDataPath.set(region, Date.now());
            await labRestore(state, victim, fault).catch(() => undefined); // tunnel: the agent restarted it already
          }));
        }
      }
      if (!only || only.includes('api')) {
        await settled(state);
        record('api_outage_30s', await round(state, everyRegion, async () => {
          await labFailApi(state, 30_000);
          while (state.apiFault()) await sleep(200);
          await sleep(3000);
        }));
      }
      if (!only || only.includes('controller')) {
        await settled(state);
        record('controller_restart', await round(state, everyRegion, async () => {
          await labRestartController(state);
          await sleep(6000);
        }));
      }
      if (!only || only.includes('rolling')) {
        await settled(state);
        record('rolling_agent_upgrade', await round(state, everyRegion, async () => {
          // As a DaemonSet update with maxUnavailable 1: one node at a time, the next once the new agent serves.
          for (const n of rec.plan.nodes) {
            const log = state.log(`agent-${n.name}`);
            const served = (readFileSync(log, 'utf8').match(/serving health/g) ?? []).length;
            await state.stop(`agent-${n.name}`, 5000);
            await startAgent(state, rec, n);
            for (let k = 0; k < 200 && (readFileSync(log, 'utf8').match(/serving health/g) ?? []).length <= served; k++) await sleep(50);
            await sleep(500);
          }
        }));
      }
      if (!only || only.includes('loss')) {
        await settled(state);
        record('wan_loss_20pct_60s_cloud', await round(state, everyRegion, async () => {
          await labFailWanLoss(state, 'cloud', 20);
          await sleep(60_000);
          await labRestoreWanLoss(state, 'cloud');
        }));
      }
    }
    for (const [key, xs] of results) {
      const gaps = xs.map((x) => x.gapMs);
      out(`e2e_gap_${key}_${b}`, median(gaps), 'ms', {
        max_ms: Math.round(Math.max(...gaps)),
        rounds: xs.length,
        runs: gaps.map(Math.round).join(','),
        lost_packets: xs.map((x) => x.lost).join(','),
        gateway_changes: xs.map((x) => x.changes).join(','),
      });
    }
  } finally {
    await labDown({ name, runDir }, quiet);
  }
}

try {
  for (const b of backends) await backend(b);
} finally {
  rmSync(runDir, { recursive: true, force: true });
}
