/**
 * The agent's timers never accumulate: its loops (heartbeat, standby probes, tunnel probes, nudges,
 * sync retries, repairs) run for many simulated minutes against the embedded API, with a fake clock that
 * counts what is armed, while its Gateway's active endpoint flips back and forth. No root needed:
 * commands go to a runner that answers without running anything.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent } from '../../src/agent/agent.ts';
import type { CommandResult, CommandRunner } from '../../src/platform/command-runner.ts';
import type { AgentConfig } from '../../src/contract/agent-config.ts';
import { HEALTH_ANNOTATION, leaseName, parseHealth } from '../../src/contract/heartbeat.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { GATEWAY, startLab } from '../support/apiserver-support.ts';

const NS = 'raven-system';
/** heartbeat, probe, tunnel-probe, nudge, retry, repair, watch-restart. */
const LOOPS = 7;
const KEY = 'cGVlcmtleXBlZXJrZXlwZWVya2V5cGVlcmtleXBlZXI=';

/** Answers like a node where every command succeeds and the kernel holds nothing yet. */
class AnsweringRunner implements CommandRunner {
  readonly counts = new Map<string, number>();
  async run(cmd: string, args: readonly string[]): Promise<CommandResult> {
    const what = args.includes('genkey') || args.includes('pubkey') ? 'wg-key' : cmd === 'ping' || args.includes('ping') ? 'ping' : cmd;
    this.counts.set(what, (this.counts.get(what) ?? 0) + 1);
    if (what === 'wg-key') return { code: 0, stdout: KEY + '\n', stderr: '' };
    if (args.includes('-json')) return { code: 0, stdout: '[]', stderr: '' };
    return { code: 0, stdout: what === 'ping' ? '64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.1 ms\n' : '', stderr: '' };
  }
}

interface Gw {
  metadata: { name: string; resourceVersion?: string };
  [key: string]: unknown;
}

const gateway = (active: string): Gw => ({
  apiVersion: `${GATEWAY.group}/${GATEWAY.version}`,
  kind: 'Gateway',
  metadata: { name: 'gw-hz' },
  spec: { endpoints: [{ nodeName: 'hz-1', type: 'tunnel' }, { nodeName: 'hz-2', type: 'tunnel' }] },
  status: {
    activeEndpoints: [{ nodeName: active, type: 'tunnel', port: 4500, config: { publicKey: KEY } }],
    nodes: [
      { nodeName: 'hz-1', privateIP: '192.168.1.11', subnets: ['10.244.1.0/24'] },
      { nodeName: 'hz-2', privateIP: '192.168.1.12', subnets: ['10.244.2.0/24'] },
      { nodeName: 'hz-3', privateIP: '192.168.1.13', subnets: ['10.244.3.0/24'] },
    ],
  },
});

const cloud: Gw = {
  apiVersion: `${GATEWAY.group}/${GATEWAY.version}`,
  kind: 'Gateway',
  metadata: { name: 'gw-cloud' },
  spec: { exposeType: 'PublicIP', endpoints: [{ nodeName: 'cloud-1', type: 'tunnel' }] },
  status: {
    activeEndpoints: [{ nodeName: 'cloud-1', type: 'tunnel', port: 4500, publicIP: '203.0.113.10', config: { publicKey: KEY.replace('c', 'd') } }],
    nodes: [{ nodeName: 'cloud-1', privateIP: '10.0.0.10', subnets: ['10.244.0.0/24'] }],
  },
};

/** The config of a hangzhou node of these tests: no tunnel device of its own (a runner answers for the kernel). */
function agentConfig(state: string, nodeName: string, nodeIP: string): AgentConfig {
  return {
    nodeName, nodeIP, namespace: NS, stateDir: state, vpnDriver: 'wireguard', vpnPort: 4500, tunnelMTU: 0, underlayMTU: 1500,
    forwardNodeIP: false, metricsAddr: '127.0.0.1:0', healthAddr: '127.0.0.1:0', device: 'raven-test0',
    proxy: { certDir: join(state, 'proxy'), tunnelAddr: '127.0.0.1:0', httpAddr: '127.0.0.1:0', httpsAddr: '127.0.0.1:0', metricsAddr: '127.0.0.1:0' },
  };
}

/** A logger that keeps each line, warnings and errors with their fields, in `logged`. */
function recordingLog(logged: string[]) {
  return { info: (m: string) => logged.push(m), warn: (m: string, f?: object) => logged.push(`${m} ${JSON.stringify(f)}`), error: (m: string, f?: object) => logged.push(`${m} ${JSON.stringify(f)}`) };
}

test('after five simulated minutes of loops and failovers, the agent holds no more timers than it has loops', async () => {
  const lab = await startLab({ seedCrds: true });
  const state = mkdtempSync(join(tmpdir(), 'raven-agent-timers-'));
  const clock = new FakeClock(() => new Promise((r) => setTimeout(r, 2)));
  const runner = new AnsweringRunner();
  const logged: string[] = [];
  const log = { info: (m: string) => logged.push(m), warn: (m: string) => logged.push(m), error: (m: string) => logged.push(m) };
  const config = agentConfig(state, 'hz-1', '192.168.1.11');
  const agent = new Agent(lab.kc, config, runner, log, { clock });
  /** Creates or updates a Gateway with its status (a subresource: written on its own). */
  const put = async (gw: Gw): Promise<void> => {
    const name = gw.metadata.name;
    const found = await lab.custom.getClusterCustomObject({ ...GATEWAY, name }).then((o) => o as Gw, () => undefined);
    const stored = (found ?? (await lab.custom.createClusterCustomObject({ ...GATEWAY, body: gw }))) as Gw;
    await lab.custom.replaceClusterCustomObjectStatus({ ...GATEWAY, name, body: { ...gw, metadata: { ...gw.metadata, resourceVersion: stored.metadata.resourceVersion } } });
  };
  try {
    await lab.core.createNamespace({ body: { metadata: { name: NS } } });
    await put(cloud);
    await put(gateway('hz-2'));
    await agent.run();
    let most = 0;
    for (let second = 0; second < 300; second++) {
      // Every 20 s the region fails over: this node becomes the gateway (peers change: nudges), then a standby again.
      if (second % 20 === 0) {
        await put(gateway(second % 40 === 0 ? 'hz-1' : 'hz-2'));
      }
      for (let step = 0; step < 4; step++) {
        await clock.advance(250);
        most = Math.max(most, clock.armed, agent.pendingTimers);
      }
    }
    // Standby probes every 250 ms, tunnel probes every second: the loops really ran all along.
    assert.ok(clock.fired >= 1200, `only ${clock.fired} timers ran`);
    assert.ok((runner.counts.get('ping') ?? 0) >= 300, `only ${runner.counts.get('ping') ?? 0} probes ran`);
    assert.ok(logged.includes('plan applied'), logged.join('\n'));
    assert.ok(most <= LOOPS, `${most} timers were pending at once`);
    assert.is(clock.armed, agent.pendingTimers, 'every timer armed on the clock is one the agent knows of');
    const lease = await lab.kc.makeApiClient((await import('@kubernetes/client-node')).CoordinationV1Api).readNamespacedLease({ name: leaseName('hz-1'), namespace: NS });
    assert.is(lease.spec?.holderIdentity, 'hz-1');
  } finally {
    await agent.stop();
    assert.is(clock.armed, 0, 'stop leaves no timer armed');
    rmSync(state, { recursive: true, force: true });
    await lab.api.close();
  }
});

/**
 * A node's routing as the kernel would keep it: rules and table 9031 are remembered, a batch is
 * applied line by line (or refused while `failing`), and the time of every batch is recorded.
 */
class RoutingKernel extends AnsweringRunner {
  readonly routes = new Map<string, { dst: string; gateway: string; metrics: { mtu: number }[] }>();
  rules = 0;
  failing = true;
  readonly batches: number[] = [];
  constructor(private readonly clock: FakeClock) {
    super();
  }
  override async run(cmd: string, args: readonly string[], input?: string): Promise<CommandResult> {
    const v4 = args.includes('-4');
    if (args.includes('-batch')) {
      this.batches.push(this.clock.now());
      if (this.failing) return { code: 2, stdout: '', stderr: 'Error: Nexthop has invalid gateway.\nCommand failed -:1' };
      for (const line of (input ?? '').trim().split('\n')) {
        const m = /^route (replace|del) (\S+)(?: via (\S+))?.*?(?:mtu lock (\d+))?$/.exec(line)!;
        if (m[1] === 'del') this.routes.delete(m[2]!);
        else this.routes.set(m[2]!, { dst: m[2]!, gateway: m[3]!, metrics: [{ mtu: Number(m[4]) }] });
      }
      return { code: 0, stdout: '', stderr: '' };
    }
    if (v4 && args.includes('route') && args.includes('9031')) return { code: 0, stdout: JSON.stringify([...this.routes.values()]), stderr: '' };
    if (v4 && args.includes('rule') && args.includes('show')) return { code: 0, stdout: JSON.stringify(Array.from({ length: this.rules }, () => ({ priority: 9031, table: '9031' }))), stderr: '' };
    if (v4 && args.includes('rule') && args.includes('add')) this.rules++;
    return super.run(cmd, args);
  }
}

test('failed syncs retry after 1, 2, 4, 8, 16, 30, 30 s; a success starts over; the repair pass restores a removed route and counts it', async () => {
  const lab = await startLab({ seedCrds: true });
  const state = mkdtempSync(join(tmpdir(), 'raven-agent-backoff-'));
  const clock = new FakeClock(() => new Promise((r) => setTimeout(r, 2)));
  const kernel = new RoutingKernel(clock);
  const logged: string[] = [];
  const log = recordingLog(logged);
  // hz-3 is a member: it routes the cloud's range via hz-2, the active gateway, and runs no tunnel.
  const config = agentConfig(state, 'hz-3', '192.168.1.13');
  const agent = new Agent(lab.kc, config, kernel, log, { clock });
  const put = async (gw: Gw): Promise<void> => {
    const stored = (await lab.custom.createClusterCustomObject({ ...GATEWAY, body: gw })) as Gw;
    await lab.custom.replaceClusterCustomObjectStatus({ ...GATEWAY, name: gw.metadata.name, body: { ...gw, metadata: { ...gw.metadata, resourceVersion: stored.metadata.resourceVersion } } });
  };
  /** Distinct times of route batches (sync or repair attempts) since `from`. */
  const attempts = (from: number): number[] => [...new Set(kernel.batches.filter((t) => t >= from))];
  const gaps = (times: number[]): number[] => times.slice(1).map((t, i) => t - times[i]!);
  const metric = (series: string): number => Number(agent.registry.render().split('\n').find((l) => l.startsWith(series + ' '))?.split(' ')[1]);
  try {
    await lab.core.createNamespace({ body: { metadata: { name: NS } } });
    await put(cloud);
    await put(gateway('hz-2'));
    await agent.run();
    let most = 0;
    const advance = async (ms: number): Promise<void> => {
      for (let t = 0; t < ms; t += 250) {
        await clock.advance(250);
        most = Math.max(most, clock.armed, agent.pendingTimers);
      }
    };
    await advance(70_000);
    // The first sync (and more for the watch's events, at the same moment), then retries.
    const first = attempts(0);
    assert.equal(gaps(first), [1000, 2000, 4000, 8000, 16_000, 30_000], `attempts at ${first.join(', ')}`);
    const successes = metric('raven_agent_sync_total{result="success"}');
    // The next retry (30 s after the last) succeeds: the route is in the table, and the backoff starts over.
    kernel.failing = false;
    await advance(25_000);
    assert.equal([...kernel.routes.keys()], ['10.244.0.0/24']);
    assert.equal(attempts(first.at(-1)! + 1), [first.at(-1)! + 30_000]);
    assert.is(metric('raven_agent_sync_total{result="success"}'), successes + 1);
    // Nothing changes: the repair pass (every 10 s) finds the kernel as planned and writes nothing.
    const quiet = clock.now();
    await advance(30_000);
    assert.equal(attempts(quiet), []);
    assert.is(metric('raven_agent_repairs_total{kind="route"}'), 0);
    // Someone deletes our route: the next repair pass puts it back, counts it and says so.
    kernel.routes.clear();
    const removed = clock.now();
    await advance(10_000);
    assert.equal([...kernel.routes.keys()], ['10.244.0.0/24'], 'the route is back');
    assert.is(attempts(removed).length, 1, 'one repair wrote it');
    assert.is(metric('raven_agent_repairs_total{kind="route"}'), 1);
    assert.is(metric('raven_agent_repairs_total{kind="rule"}'), 0, 'the rule was still there');
    assert.ok(logged.some((l) => l.startsWith('repaired the data plane') && l.includes('added route 10.244.0.0/24 via 192.168.1.12')), logged.join('\n'));
    // It is deleted again and the kernel refuses it now: the failed repair backs off from 1 s again.
    kernel.routes.clear();
    kernel.failing = true;
    const refused = clock.now();
    await advance(20_000);
    const times = attempts(refused);
    assert.equal(gaps(times), [1000, 2000, 4000, 8000].slice(0, times.length - 1), `attempts at ${times.join(', ')}`);
    assert.ok(times.length >= 4, `attempts at ${times.join(', ')}`);
    assert.ok(most <= LOOPS, `${most} timers were pending at once`);
    assert.is(clock.armed, agent.pendingTimers, 'every timer armed on the clock is one the agent knows of');
  } finally {
    await agent.stop();
    assert.is(clock.armed, 0, 'stop leaves no timer armed');
    rmSync(state, { recursive: true, force: true });
    await lab.api.close();
  }
});

test('a tunnel device that vanished is reported down within a backend check, and a sync brings it back', async () => {
  const lab = await startLab({ seedCrds: true });
  const state = mkdtempSync(join(tmpdir(), 'raven-agent-backend-'));
  const clock = new FakeClock(() => new Promise((r) => setTimeout(r, 2)));
  let deviceGone = false;
  /** A node whose tunnel device can vanish; while it is gone it cannot be brought up either. */
  const runner = new (class extends AnsweringRunner {
    override async run(cmd: string, args: readonly string[]): Promise<CommandResult> {
      const link = args.includes('link') && args.includes('raven-test0');
      if (deviceGone && link && (args.includes('show') || args.includes('set'))) return { code: 1, stdout: '', stderr: 'Cannot find device "raven-test0"' };
      return super.run(cmd, args);
    }
  })();
  const logged: string[] = [];
  const log = recordingLog(logged);
  const config = agentConfig(state, 'hz-1', '192.168.1.11');
  const agent = new Agent(lab.kc, config, runner, log, { clock });
  const coordination = lab.kc.makeApiClient((await import('@kubernetes/client-node')).CoordinationV1Api);
  const backendUp = async (): Promise<boolean | undefined> => {
    const lease = await coordination.readNamespacedLease({ name: leaseName('hz-1'), namespace: NS }).catch(() => undefined);
    return parseHealth(lease?.metadata?.annotations?.[HEALTH_ANNOTATION])?.backendUp;
  };
  /** Advances a second at a time until the heartbeat says `want` (the lease is written over real HTTP). */
  const until = async (want: boolean, what: string): Promise<void> => {
    for (let i = 0; i < 10; i++) {
      await clock.advance(1000);
      for (let j = 0; j < 20 && (await backendUp()) !== want; j++) await new Promise((r) => setTimeout(r, 10));
      if ((await backendUp()) === want) return;
    }
    assert.unreachable(`${what}:\n${logged.join('\n')}`);
  };
  try {
    await lab.core.createNamespace({ body: { metadata: { name: NS } } });
    for (const gw of [cloud, gateway('hz-1')]) {
      const stored = (await lab.custom.createClusterCustomObject({ ...GATEWAY, body: gw })) as Gw;
      await lab.custom.replaceClusterCustomObjectStatus({ ...GATEWAY, name: gw.metadata.name, body: { ...gw, metadata: { ...gw.metadata, resourceVersion: stored.metadata.resourceVersion } } });
    }
    await agent.run();
    await until(true, 'the gateway to report its backend up');
    deviceGone = true;
    await until(false, 'the heartbeat to report the backend down');
    assert.ok(logged.some((l) => l === 'tunnel backend is down; restoring it {"reason":"device raven-test0 does not exist"}'), logged.join('\n'));
    // The sync it started failed too (the device cannot be brought up), naming what it could not do.
    assert.ok(logged.some((l) => l.startsWith('failed to apply plan') && l.includes('failed to bring up device raven-test0')), logged.join('\n'));
    deviceGone = false;
    await until(true, 'a retry to restore the backend and the heartbeat to say so');
    assert.ok(logged.includes('tunnel backend restored'), logged.join('\n'));
  } finally {
    await agent.stop();
    rmSync(state, { recursive: true, force: true });
    await lab.api.close();
  }
});

test.run();
