/**
 * End-to-end figures from `raven lab` (test/fixtures/lab/seed-ha-*.yaml: a public cloud with two
 * gateways, two NATed edges), per backend, as JSON lines:
 *   - lab_up_to_full_connectivity: from `lab up` to every pod pair connecting (two clean rounds);
 *   - failover gap: a ping every 20 ms across regions while the active gateway node is hard-killed
 *     (agent and tunnel SIGKILLed, switch ports down); from the kill to the first reply, which can
 *     only come through the new gateway; median and max over rounds, edge and cloud regions;
 *   - WireGuard only: cross-region pod-to-pod TCP through the lab's tunnel vs wireguard-go
 *     configured by hand between the same two gateway namespaces (across the same NAT).
 * Needs root, wireguard-go, wg, strongSwan, nftables, iperf3. Usage: npm run bench:e2e [-- --rounds N].
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { failures } from '../src/lab/check.ts';
import { gateways, labCheck, labDown, labFail, labRestore, labUp } from '../src/lab/lab.ts';
import type { LabNode } from '../src/lab/layout.ts';
import type { LabState } from '../src/lab/state.ts';

const rounds = Number(process.argv[process.argv.indexOf('--rounds') + 1]) || 4;
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

/** One failover: ping every 20 ms from `source`'s pod to `target`'s, kill `victim`, time the first reply after. */
async function failoverGap(state: LabState, victim: string, source: LabNode, target: LabNode): Promise<number> {
  const ping: ChildProcess = spawn('ip', ['netns', 'exec', source.podNetns, 'ping', '-D', '-n', '-i', '0.02', '-W', '1', target.podIP], { stdio: ['ignore', 'pipe', 'ignore'] });
  let text = '';
  ping.stdout!.on('data', (d) => (text += d));
  try {
    await sleep(1000);
    // From the first kill; counting only replies sent after the node was fully down (a reply in
    // flight through the old gateway is not recovery). An upper bound by the ~20-50 ms labFail takes.
    const killedAt = Date.now() / 1000;
    await labFail(state, victim);
    const downAt = Date.now() / 1000;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const replies = [...text.matchAll(/^\[(\d+\.\d+)\] .*time=([\d.]+)/gm)].map((m) => ({ at: Number(m[1]), sent: Number(m[1]) - Number(m[2]) / 1000 }));
      const first = replies.find((r) => r.sent > downAt);
      if (first) return (first.at - killedAt) * 1000;
      if (Date.now() > deadline) throw new Error(`no reply within 30 s of killing ${victim}`);
      await sleep(50);
    }
  } finally {
    ping.kill('SIGTERM');
  }
}

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
    out(`lab_up_to_full_connectivity_${b}`, (connectedMs ?? Date.now() - t0) / 1000, 's', { nodes: state.read().plan.nodes.length });
    if (b === 'wireguard') {
      await settled(state);
      await throughput(state);
    }
    const rec = state.read();
    const gaps: Record<string, number[]> = { hangzhou: [], cloud: [] };
    for (let i = 0; i < rounds; i++) {
      for (const region of ['hangzhou', 'cloud'] as const) {
        await settled(state);
        const victim = await activeOf(state, region);
        // From a member pod of qingdao to a pod of the failing region that survives.
        const source = rec.plan.nodes.find((n) => n.region === 'qingdao' && n.name !== 'qd-1') ?? rec.plan.nodes.find((n) => n.region === 'qingdao')!;
        const target = rec.plan.nodes.find((n) => n.region === region && n.name !== victim)!;
        gaps[region]!.push(await failoverGap(state, victim, source, target));
        await labRestore(state, victim);
      }
    }
    for (const [region, xs] of Object.entries(gaps)) {
      out(`failover_gap_${region}_${b}_median`, median(xs), 'ms', { rounds: xs.length, runs: xs.map(Math.round).join(',') });
      out(`failover_gap_${region}_${b}_max`, Math.max(...xs), 'ms');
    }
  } finally {
    await labDown({ name, runDir }, quiet);
  }
}

try {
  await backend('wireguard');
  await backend('ipsec');
} finally {
  rmSync(runDir, { recursive: true, force: true });
}
