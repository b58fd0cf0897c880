/**
 * Pod-to-pod throughput across one IPsec tunnel: set up by the agent's apply step (strongSwan
 * charon with kernel-libipsec, as on this kernel, IKE identities, probe and anchor addresses)
 * versus charon configured by hand (a plain strongswan.conf and swanctl.conf, as in
 * ../shared/reference/dataplane.md) between the same two namespaces. iperf3, 4 s TCP runs,
 * alternating, median of 3 each. Prints JSON lines. Needs root, strongSwan (charon, swanctl,
 * libcharon-extra-plugins) and iperf3.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyPlan } from '../src/agent/agent.ts';
import { ExecRunner } from '../src/platform/command-runner.ts';
import { CHARON_CANDIDATES } from '../src/agent/dataplane/ipsec.ts';
import type { NodePlan } from '../src/agent/plan.ts';
import { RouteTable } from '../src/agent/dataplane/route-table.ts';
import { makeTunnel, type Tunnel } from '../src/agent/dataplane/tunnel.ts';
import { pair, sh } from '../test/support/netns.ts';
import { type Pods, report, startPods } from './throughput-support.ts';

const ns = pair('ipt');
const state = mkdtempSync(join(tmpdir(), 'raven-ipt-'));
const runner = new ExecRunner();
const PSK = 'bench-only-psk-not-a-secret';
const charon = CHARON_CANDIDATES.find((p) => existsSync(p))!;
const children: ChildProcess[] = [];
/** What to stop if a run fails half-way (the agent's charons are detached: they outlive us otherwise). */
const teardowns: (() => Promise<void>)[] = [];

const gatewayPlan = (me: 'a' | 'b'): NodePlan => {
  const [mine, theirs] = me === 'a' ? ['10.99.1.0/24', '10.99.2.0/24'] : ['10.99.2.0/24', '10.99.1.0/24'];
  return {
    role: 'gateway',
    gateway: `gw-${me}`,
    activeNode: me,
    routes: [],
    peers: [{
      gateway: me === 'a' ? 'gw-b' : 'gw-a',
      node: me === 'a' ? 'b' : 'a',
      // a dials b (as a NATed edge dials the cloud); b waits.
      ...(me === 'a' && { endpoint: '192.168.77.2:4500', keepaliveSeconds: 5 }),
      allowedIPs: [theirs],
      localSubnets: [mine],
      path: 'direct',
      relaysFor: [],
      probeIP: theirs.replace('.0/24', '.0'),
    }],
    staged: [],
    probeSource: mine.replace('.0/24', '.0'),
    mtu: 1400,
  };
};

async function until(what: string, f: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const pingOk = (): boolean => spawnSync('ip', ['netns', 'exec', ns.a, 'ping', '-c', '1', '-W', '1', '-I', '10.99.1.1', '10.99.2.1']).status === 0;

async function agentTunnel(): Promise<() => Promise<void>> {
  const sides: [Tunnel, RouteTable][] = (['a', 'b'] as const).map((s) => [
    makeTunnel({ backend: 'ipsec', node: s, device: 'unused', port: 4500, mtu: 1400, stateDir: join(state, `agent-${s}`), runner, netns: s === 'a' ? ns.a : ns.b, psk: PSK }),
    new RouteTable(runner, { table: 9031, priority: 9031, netns: s === 'a' ? ns.a : ns.b }),
  ]);
  const down = async (): Promise<void> => {
    for (const [t, r] of sides) {
      await t.cleanUp();
      await r.cleanUp();
    }
  };
  teardowns.push(down);
  await applyPlan(gatewayPlan('b'), ...sides[1]!);
  await applyPlan(gatewayPlan('a'), ...sides[0]!);
  await until('agent tunnel up', pingOk);
  teardowns.pop();
  return down;
}

/**
 * charon and swanctl by hand, as a strongSwan user would, with kernel-libipsec. charon runs as a
 * daemon does (and as the agent starts it): in a session of its own. That matters here: with the
 * kernel's autogroup scheduling, a session is a scheduling group, and on this 2-core host a charon
 * sharing the benchmark's session got ~455 Mbit/s where one in its own session got ~350 (same
 * config, alternating runs), whoever configured it. Compare like with like.
 */
async function rawTunnel(): Promise<() => Promise<void>> {
  const procs: ChildProcess[] = [];
  for (const [s, n, other] of [['a', 1, 2], ['b', 2, 1]] as const) {
    const dir = join(state, `raw-${s}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'strongswan.conf'), `charon {\n  load = random nonce aes sha1 sha2 hmac gmp kdf kernel-libipsec kernel-netlink socket-default vici\n  plugins { vici { socket = unix://${dir}/charon.vici } }\n}\n`);
    writeFileSync(join(dir, 'swanctl.conf'), [
      'connections { raw { version = 2',
      `  local_addrs = 192.168.77.${n}`, `  remote_addrs = 192.168.77.${other}`,
      '  proposals = aes128-sha256-modp2048',
      `  local { auth = psk\n    id = ${s}.raw }`, `  remote { auth = psk\n    id = ${s === 'a' ? 'b' : 'a'}.raw }`,
      `  children { raw { local_ts = 10.99.${n}.0/24\n    remote_ts = 10.99.${other}.0/24\n    esp_proposals = aes128-sha256\n    start_action = ${s === 'a' ? 'start' : 'trap'} } } } }`,
      `secrets { ike-raw { id-a = a.raw\n  id-b = b.raw\n  secret = "${PSK}" } }`, '',
    ].join('\n'));
    const p = spawn('ip', ['netns', 'exec', s === 'a' ? ns.a : ns.b, 'unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs ravenrawrun /run && exec "$1"', 'raw-charon', charon], { env: { PATH: process.env.PATH, STRONGSWAN_CONF: join(dir, 'strongswan.conf') }, stdio: 'ignore', detached: true });
    procs.push(p);
    children.push(p);
    await until(`raw charon ${s}`, () => existsSync(join(dir, 'charon.vici')));
  }
  for (const s of ['b', 'a']) {
    const dir = join(state, `raw-${s}`);
    // The vici socket file appears a moment before charon accepts on it.
    await new Promise((r) => setTimeout(r, 200));
    sh('env', ['-i', `PATH=${process.env.PATH}`, `STRONGSWAN_CONF=${join(dir, 'strongswan.conf')}`, 'swanctl', '--load-all', '--noprompt', '--file', join(dir, 'swanctl.conf'), '--uri', `unix://${dir}/charon.vici`]);
  }
  await until('raw tunnel up', pingOk);
  return async () => {
    for (const p of procs) {
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    }
  };
}

let pods: Pods | undefined;
try {
  pods = await startPods(ns);
  const results: Record<'raven' | 'raw', number[]> = { raven: [], raw: [] };
  for (let i = 0; i < 3; i++) {
    for (const kind of (i % 2 ? ['raven', 'raw'] : ['raw', 'raven']) as ('raven' | 'raw')[]) {
      const down = kind === 'raven' ? await agentTunnel() : await rawTunnel();
      teardowns.push(down);
      try {
        results[kind].push(pods.iperf());
      } finally {
        teardowns.pop();
        await down();
      }
    }
  }
  report({ agent: 'agent_ipsec_tunnel_throughput', raw: 'raw_ipsec_backend_throughput', ratio: 'agent_over_raw_ipsec_throughput_ratio' }, results);
} finally {
  pods?.stop();
  for (const down of teardowns) await down().catch(() => undefined);
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  ns.cleanup();
  rmSync(state, { recursive: true, force: true });
}
