/**
 * The agent's repair pass and backend check on the real kernel: a real `Agent` (in this process,
 * against the embedded API server) is the active WireGuard gateway of its region inside a throwaway
 * network namespace. Behind its back we delete its route, its ip rule and its WireGuard peer, then
 * kill its wireguard-go; each comes back. Only outcomes are asserted, never how fast: the repair
 * period is shortened so the test does not wait ten seconds per step.
 */
import { readFileSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HEALTH_ANNOTATION, leaseName, parseHealth } from '../../src/contract/heartbeat.ts';
import { waitFor } from '../support/cluster-harness.ts';
import { createGatewayAgent, NODE, NS } from '../support/gateway-agent.ts';
import { canUseNetns, haveWireGuard, leftovers, run, sh } from '../support/netns.ts';

/** The shared gateway agent, with what the repair tests look at; `stop` removes everything. */
async function startGateway(tag: string, repairPeriodMs: number) {
  const base = await createGatewayAgent(tag, 51860, { repairPeriodMs });
  const { ns, device, agent, lab } = base;
  const gw = {
    ...base,
    route: new RegExp(`^10\\.244\\.0\\.0/24 dev ${device} .*mtu lock 1420`, 'm'),
    rules: async (): Promise<number> => ((await run('ip', ['-n', ns, 'rule', 'show'])).out.match(/lookup 9031/g) ?? []).length,
    repairs: (kind: string): number => Number(/ (\d+)$/.exec(agent.registry.render().split('\n').find((l) => l.startsWith(`raven_agent_repairs_total{kind="${kind}"}`)) ?? '')?.[1]),
    backendUp: async (): Promise<boolean | undefined> => {
      const lease = await lab.kc.makeApiClient(k8s.CoordinationV1Api).readNamespacedLease({ name: leaseName(NODE), namespace: NS });
      return parseHealth(lease.metadata?.annotations?.[HEALTH_ANNOTATION])?.backendUp;
    },
  };
  try {
    await agent.run();
    await waitFor(async () => gw.route.test(await gw.table()) && (await gw.peers()).includes(gw.cloudKey), 15_000, () => `the gateway's plan in the kernel:\n${gw.logs()}`);
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
