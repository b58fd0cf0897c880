/**
 * The agent's repair pass and backend check on the real kernel: a real `Agent` (in this process,
 * against the embedded API server) is the active WireGuard gateway of its region inside a throwaway
 * network namespace. Behind its back we delete its route, its ip rule and its WireGuard peer, then
 * kill its wireguard-go; each comes back. Only outcomes are asserted, never how fast: the repair
 * period is shortened so the test does not wait ten seconds per step.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Agent } from '../../src/agent/agent.ts';
import type { AgentConfig } from '../../src/contract/agent-config.ts';
import { HEALTH_ANNOTATION, leaseName, parseHealth } from '../../src/contract/heartbeat.ts';
import { GATEWAY, startLab } from '../support/apiserver-support.ts';
import { waitFor } from '../support/cluster-harness.ts';
import { canUseNetns, haveWireGuard, leftovers, PREFIX, RecordingRunner, run, sh } from '../support/netns.ts';

const NS = 'raven-system';
const key = (): string => spawnSync('wg', ['pubkey'], { input: spawnSync('wg', ['genkey'], { encoding: 'utf8' }).stdout, encoding: 'utf8' }).stdout.trim();

/** A WireGuard gateway agent in its own namespace, the cloud its one peer; `stop` removes everything. */
async function startGateway(tag: string, repairPeriodMs: number) {
  const ns = `${PREFIX}-${tag}`;
  const device = `rg${tag}${process.pid % 100000}`.slice(0, 15);
  const state = mkdtempSync(join(tmpdir(), 'raven-repair-'));
  sh('ip', ['netns', 'add', ns]);
  sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  const lab = await startLab({ seedCrds: true });
  const cloudKey = key();
  const gateways = [
    {
      apiVersion: `${GATEWAY.group}/${GATEWAY.version}`,
      kind: 'Gateway',
      metadata: { name: 'gw-cloud' },
      spec: { exposeType: 'PublicIP', endpoints: [{ nodeName: 'cloud-1', type: 'tunnel' }] },
      status: {
        activeEndpoints: [{ nodeName: 'cloud-1', type: 'tunnel', port: 4500, publicIP: '203.0.113.10', config: { publicKey: cloudKey } }],
        nodes: [{ nodeName: 'cloud-1', privateIP: '10.0.0.10', subnets: ['10.244.0.0/24'] }],
      },
    },
    {
      apiVersion: `${GATEWAY.group}/${GATEWAY.version}`,
      kind: 'Gateway',
      metadata: { name: 'gw-hz' },
      // Reachable too, so the cloud's peer is one we never nudge (a nudge re-creates peers).
      spec: { exposeType: 'PublicIP', endpoints: [{ nodeName: 'hz-1', type: 'tunnel' }] },
      status: {
        activeEndpoints: [{ nodeName: 'hz-1', type: 'tunnel', port: 4500, publicIP: '198.51.100.21', config: {} }],
        nodes: [{ nodeName: 'hz-1', privateIP: '192.168.1.11', subnets: ['10.244.1.0/24'] }],
      },
    },
  ];
  const logged: string[] = [];
  const line = (level: string) => (m: string, f?: Record<string, unknown>) => logged.push(`${level} ${m} ${JSON.stringify(f ?? {})}`);
  const config: AgentConfig = {
    nodeName: 'hz-1', nodeIP: '192.168.1.11', namespace: NS, stateDir: state, vpnDriver: 'wireguard', vpnPort: 51860, tunnelMTU: 1420, underlayMTU: 1500,
    forwardNodeIP: false, metricsAddr: '127.0.0.1:0', healthAddr: '127.0.0.1:0', device, netns: ns,
    proxy: { certDir: join(state, 'proxy'), tunnelAddr: '127.0.0.1:0', httpAddr: '127.0.0.1:0', httpsAddr: '127.0.0.1:0', metricsAddr: '127.0.0.1:0' },
  };
  const agent = new Agent(lab.kc, config, new RecordingRunner(), { info: line('info'), warn: line('warn'), error: line('error') }, { repairPeriodMs });
  const logs = (): string => logged.join('\n');
  const gw = {
    ns,
    device,
    cloudKey,
    agent,
    logs,
    pidFile: join(state, `wireguard-go.${device}.pid`),
    route: new RegExp(`^10\\.244\\.0\\.0/24 dev ${device} .*mtu lock 1420`, 'm'),
    table: async (): Promise<string> => (await run('ip', ['-n', ns, 'route', 'show', 'table', '9031'])).out.trim(),
    rules: async (): Promise<number> => ((await run('ip', ['-n', ns, 'rule', 'show'])).out.match(/lookup 9031/g) ?? []).length,
    peers: async (): Promise<string[]> => {
      const r = await run('ip', ['netns', 'exec', ns, 'wg', 'show', device, 'peers']);
      return r.code === 0 ? r.out.trim().split('\n').filter(Boolean) : [];
    },
    repairs: (kind: string): number => Number(/ (\d+)$/.exec(agent.registry.render().split('\n').find((l) => l.startsWith(`raven_agent_repairs_total{kind="${kind}"}`)) ?? '')?.[1]),
    backendUp: async (): Promise<boolean | undefined> => {
      const lease = await lab.kc.makeApiClient(k8s.CoordinationV1Api).readNamespacedLease({ name: leaseName('hz-1'), namespace: NS });
      return parseHealth(lease.metadata?.annotations?.[HEALTH_ANNOTATION])?.backendUp;
    },
    stop: async (): Promise<void> => {
      await agent.stop();
      await lab.api.close();
      spawnSync('ip', ['netns', 'del', ns]);
      rmSync(state, { recursive: true, force: true });
      assert.not.ok(existsSync(`/var/run/wireguard/${device}.sock`), 'the UAPI socket is removed');
      assert.equal(sh('ps', ['-eo', 'stat,args']).split('\n').filter((l) => l.includes(device) && !l.startsWith('Z')), [], 'no wireguard-go of ours is left');
    },
  };
  try {
    await lab.core.createNamespace({ body: { metadata: { name: NS } } });
    for (const g of gateways) {
      const stored = (await lab.custom.createClusterCustomObject({ ...GATEWAY, body: g })) as { metadata: { resourceVersion: string } };
      await lab.custom.replaceClusterCustomObjectStatus({ ...GATEWAY, name: g.metadata.name, body: { ...g, metadata: { ...g.metadata, resourceVersion: stored.metadata.resourceVersion } } });
    }
    await agent.run();
    await waitFor(async () => gw.route.test(await gw.table()) && (await gw.peers()).includes(cloudKey), 15_000, () => `the gateway's plan in the kernel:\n${logs()}`);
  } catch (err) {
    await gw.stop();
    throw err;
  }
  return gw;
}

if (!canUseNetns() || !haveWireGuard()) {
  console.warn('needs root, wireguard-tools and wireguard-go: repair tests not run');
} else {
  test('a route, the rule and a peer removed behind the agent\'s back are restored by the repair pass, counted and logged', async () => {
    // A short period, so the test does not wait ten seconds per step; nothing else restores these.
    const gw = await startGateway('rp', 200);
    try {
      assert.is(await gw.rules(), 1);
      assert.equal([gw.repairs('route'), gw.repairs('rule'), gw.repairs('peer')], [0, 0, 0], 'applying the plan the first time is no repair');
      // Each removal succeeds (sh throws otherwise); the pass may already be putting it back when we
      // look, so we wait for it to be back and counted (the pass counts once it is done).
      sh('ip', ['-n', gw.ns, 'route', 'flush', 'table', '9031']);
      await waitFor(async () => gw.route.test(await gw.table()) && gw.repairs('route') >= 1, 10_000, () => `the route to be restored:\n${gw.logs()}`);
      assert.match(gw.logs(), /repaired the data plane.*"route":"added route 10\.244\.0\.0\/24 dev /);

      sh('ip', ['-n', gw.ns, 'rule', 'del', 'pref', '9031', 'lookup', '9031']);
      await waitFor(async () => (await gw.rules()) === 1 && gw.repairs('rule') >= 1, 10_000, () => `the rule to be restored:\n${gw.logs()}`);
      assert.match(gw.logs(), /"rule":"added the IPv4 rule"/);

      sh('ip', ['netns', 'exec', gw.ns, 'wg', 'set', gw.device, 'peer', gw.cloudKey, 'remove']);
      await waitFor(async () => (await gw.peers()).includes(gw.cloudKey) && gw.repairs('peer') >= 1, 10_000, () => `the peer to be restored:\n${gw.logs()}`);
      const dump = sh('ip', ['netns', 'exec', gw.ns, 'wg', 'show', gw.device, 'dump']);
      assert.match(dump, new RegExp(`${gw.cloudKey.replace(/[+/]/g, '\\$&')}\\t\\S+\\t203\\.0\\.113\\.10:4500\\t10\\.244\\.0\\.0/24\\t`), 'with its endpoint and allowed IPs');
      assert.match(gw.logs(), /"peer":"set peer gw-cloud"/);
      assert.is(await gw.rules(), 1, 'never duplicated');
      assert.not.match(gw.logs(), /^error /m, 'nothing failed on the way');
      assert.not.match(gw.logs(), /re-initiated handshakes/, 'no nudge restored anything');
    } finally {
      await gw.stop();
    }
  });

  test('a killed wireguard-go is noticed by the heartbeat\'s backend check, reported and started again', async () => {
    // The repair pass would restore it too: an hour's period keeps it out of this test.
    const gw = await startGateway('rb', 3_600_000);
    try {
      await waitFor(() => gw.backendUp(), 5_000, 'the heartbeat to report the backend up');
      const pid = Number(readFileSync(gw.pidFile, 'utf8'));
      process.kill(pid, 'SIGKILL');
      await waitFor(() => /tunnel backend is down; restoring it/.test(gw.logs()), 10_000, () => `the backend check to notice:\n${gw.logs()}`);
      await waitFor(async () => Number(readFileSync(gw.pidFile, 'utf8')) !== pid && (await gw.peers()).includes(gw.cloudKey) && gw.route.test(await gw.table()), 10_000, () => `the backend to be started again:\n${gw.logs()}`);
      assert.match(gw.logs(), /tunnel backend is down; restoring it \{"reason":"(device \S+ does not exist|wireguard-go \(pid \d+\) for \S+ is not running)"\}/);
      await waitFor(() => /tunnel backend restored/.test(gw.logs()), 5_000, () => `the restore to be logged:\n${gw.logs()}`);
      await waitFor(() => gw.backendUp(), 5_000, 'the heartbeat to report the backend up again');
      assert.is(gw.repairs('backend'), 0, 'the repair pass did not run');
      assert.not.match(gw.logs(), /^error /m, 'nothing failed on the way');
    } finally {
      await gw.stop();
    }
  });

  test.after(() => assert.equal(leftovers(), [], 'no namespaces of ours are left'));
}

test.run();
