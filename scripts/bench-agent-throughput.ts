/**
 * Pod-to-pod throughput across one tunnel: set up by the agent's code (WireGuard backend, policy
 * table with MTU) versus the raw backend configured by hand (wg + a main-table route) between the
 * same two namespaces. iperf3, 4 s TCP runs, alternating, median of 3 each.
 * Prints JSON lines {"name","value","unit"}. Needs root, wireguard-go, wg and iperf3.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExecRunner } from '../src/platform/command-runner.ts';
import { RouteTable } from '../src/agent/dataplane/route-table.ts';
import { WireGuard } from '../src/agent/dataplane/wireguard.ts';
import { pair, sh } from '../test/support/netns.ts';
import { type Pods, report, startPods } from './throughput-support.ts';

const ns = pair('tp');
const state = mkdtempSync(join(tmpdir(), 'raven-tp-'));
const tag = String(process.pid % 100000);
const runner = new ExecRunner();

async function tunnel(kind: 'raven' | 'raw', aDev: string, bDev: string): Promise<WireGuard[]> {
  const a = new WireGuard({ device: aDev, port: 51830, mtu: 1420, stateDir: join(state, `${kind}-a`), netns: ns.a, runner });
  const b = new WireGuard({ device: bDev, port: 51831, mtu: 1420, stateDir: join(state, `${kind}-b`), netns: ns.b, runner });
  if (kind === 'raven') {
    await a.up();
    await b.up();
    await b.setPeers([{ gateway: 'a', node: 'a', publicKey: await a.publicKey(), allowedIPs: ['10.99.1.0/24'], path: 'direct', relaysFor: [], localSubnets: [] }]);
    await a.setPeers([{ gateway: 'b', node: 'b', publicKey: await b.publicKey(), endpoint: '192.168.77.2:51831', allowedIPs: ['10.99.2.0/24'], path: 'direct', relaysFor: [], localSubnets: [] }]);
    await new RouteTable(runner, { table: 9031, priority: 9031, netns: ns.a }).set([{ dst: '10.99.2.0/24', dev: aDev, mtu: 1420 }]);
    await new RouteTable(runner, { table: 9031, priority: 9031, netns: ns.b }).set([{ dst: '10.99.1.0/24', dev: bDev, mtu: 1420 }]);
  } else {
    // By hand, as a WireGuard user would: the same wireguard-go, wg set, a plain route in main.
    // Only the device and key come from our code; peers and routes are made by hand.
    await a.up();
    await b.up();
    const [ka, kb] = [await a.publicKey(), await b.publicKey()];
    sh('ip', ['netns', 'exec', ns.b, 'wg', 'set', bDev, 'peer', ka, 'allowed-ips', '10.99.1.0/24']);
    sh('ip', ['netns', 'exec', ns.a, 'wg', 'set', aDev, 'peer', kb, 'endpoint', '192.168.77.2:51831', 'allowed-ips', '10.99.2.0/24']);
    sh('ip', ['-n', ns.a, 'route', 'add', '10.99.2.0/24', 'dev', aDev]);
    sh('ip', ['-n', ns.b, 'route', 'add', '10.99.1.0/24', 'dev', bDev]);
  }
  return [a, b];
}

let pods: Pods | undefined;
try {
  pods = await startPods(ns);
  const results: Record<'raven' | 'raw', number[]> = { raven: [], raw: [] };
  for (let i = 0; i < 3; i++) {
    for (const kind of ['raven', 'raw'] as const) {
      const wgs = await tunnel(kind, `rtp${kind[1]}a${tag}`, `rtp${kind[1]}b${tag}`);
      spawnSync('ip', ['netns', 'exec', ns.a, 'ping', '-c', '2', '-i', '0.2', '-I', '10.99.1.1', '10.99.2.1']);
      results[kind].push(pods.iperf());
      for (const w of wgs) await w.cleanUp();
      if (kind === 'raw') {
        spawnSync('ip', ['-n', ns.a, 'route', 'del', '10.99.2.0/24']);
        spawnSync('ip', ['-n', ns.b, 'route', 'del', '10.99.1.0/24']);
      } else {
        await new RouteTable(runner, { table: 9031, priority: 9031, netns: ns.a }).cleanUp();
        await new RouteTable(runner, { table: 9031, priority: 9031, netns: ns.b }).cleanUp();
      }
    }
  }
  report({ agent: 'agent_tunnel_throughput', raw: 'raw_backend_throughput', ratio: 'agent_over_raw_throughput_ratio' }, results);
} finally {
  pods?.stop();
  ns.cleanup();
  rmSync(state, { recursive: true, force: true });
}
