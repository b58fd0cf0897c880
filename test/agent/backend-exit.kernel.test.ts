/**
 * A tunnel daemon that dies is reported at once: a real `Agent` (in this process, against the
 * embedded API server) is the active WireGuard gateway of its region in a throwaway namespace, on a
 * fake clock, so no heartbeat, retry or repair runs unless the test moves time. Every write of its
 * Lease is recorded through a watch. When its wireguard-go is SIGKILLed, the next write says
 * `backendUp: false` with no timer having run (so it was no scheduled renewal), and the daemon is
 * started again and reported up the same way. A second exit soon after waits for its backoff.
 * Below the agent, each executor reports the exit of a daemon it started (its exit event) and of
 * one it adopted from an earlier agent (by PID), and never of one it stopped itself.
 * Asserted: the order of the Lease writes and the timers run, never how fast anything was.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BACKEND_STABLE_MS, SYNC_RETRY_MS } from '../../src/agent/agent.ts';
import { HEALTH_ANNOTATION, leaseName, parseHealth } from '../../src/contract/heartbeat.ts';
import { isAlive, type ProcessExit, watchExit } from '../../src/platform/owned-process.ts';
import { waitFor } from '../support/cluster-harness.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { createGatewayAgent, NODE, NS } from '../support/gateway-agent.ts';
import { IpsecBackend } from '../../src/agent/dataplane/ipsec.ts';
import { WireGuard } from '../../src/agent/dataplane/wireguard.ts';
import { canUseNetns, haveStrongswan, haveWireGuard, leftovers, PREFIX, RecordingRunner, run, sh } from '../support/netns.ts';


test('watchExit reports a child\'s exit with its signal, and an adopted process by its PID once it is gone', async () => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  const fromChild = new Promise<ProcessExit>((r) => watchExit({ child }, r));
  child.kill('SIGKILL');
  assert.equal(await fromChild, { pid: child.pid, signal: 'SIGKILL' });

  const other = spawn('sleep', ['30'], { stdio: 'ignore' });
  const pid = other.pid!;
  const seen: ProcessExit[] = [];
  const fromProc = new Promise<ProcessExit>((r) => watchExit({ pid, isOurs: () => isAlive(pid) }, (e) => (seen.push(e), r(e)), 20));
  other.kill('SIGTERM');
  // The watch's own timer keeps no process alive (an agent has its servers for that); this test does.
  const alive = setInterval(() => undefined, 1000);
  assert.equal(await fromProc, { pid }, 'no status to read for a process we did not start');
  clearInterval(alive);
  await new Promise((r) => setTimeout(r, 100));
  assert.is(seen.length, 1, 'reported once');

  const stopped = spawn('sleep', ['30'], { stdio: 'ignore' });
  let called = false;
  watchExit({ child: stopped }, () => (called = true)).stop();
  const gone = new Promise((r) => stopped.once('exit', r));
  stopped.kill('SIGKILL');
  await gone;
  await new Promise((r) => setImmediate(r));
  assert.not.ok(called, 'a stopped watch says nothing: we stopped that process on purpose');
});

/** The shared gateway agent on a fake clock; `writes` holds every Lease write's backendUp, in order. */
async function startGateway(tag: string) {
  const clock = new FakeClock();
  const base = await createGatewayAgent(tag, 51861, { clock });
  const { ns, device, agent, lab, cloudKey } = base;
  const writes: (boolean | undefined)[] = [];
  let watching: AbortController | undefined;
  const gw = {
    ...base,
    clock,
    writes,
    pid: (): number => Number(readFileSync(base.pidFile, 'utf8')),
    ready: async (): Promise<boolean> => {
      const route = (await run('ip', ['-n', ns, 'route', 'show', 'table', '9031'])).out;
      const peers = await run('ip', ['netns', 'exec', ns, 'wg', 'show', device, 'peers']);
      return new RegExp(`^10\\.244\\.0\\.0/24 dev ${device} `, 'm').test(route) && peers.code === 0 && peers.out.includes(cloudKey);
    },
    stop: async (): Promise<void> => {
      watching?.abort();
      await base.stop();
    },
  };
  try {
    watching = await new k8s.Watch(lab.kc).watch(
      `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases`,
      {},
      (_phase, lease: k8s.V1Lease) => {
        if (lease.metadata?.name === leaseName(NODE)) writes.push(parseHealth(lease.metadata.annotations?.[HEALTH_ANNOTATION])?.backendUp);
      },
      () => undefined,
    );
    await agent.run();
    await waitFor(() => gw.ready(), 15_000, () => `the gateway's plan in the kernel:\n${gw.logs()}`);
    // The first renewal waits for the first sync, so it reports the backend up; no timer has run.
    await waitFor(() => writes.at(-1) === true, 5_000, () => `a renewal saying the backend is up (writes: ${JSON.stringify(writes)}):\n${gw.logs()}`);
  } catch (err) {
    await gw.stop();
    throw err;
  }
  return gw;
}

if (!canUseNetns() || !haveWireGuard()) {
  console.warn('needs root, wireguard-tools and wireguard-go: backend exit tests not run');
} else {
  test('a SIGKILLed wireguard-go is reported down in a Lease written at once, started again, and reported up', async () => {
    const gw = await startGateway('bx');
    try {
      const before = gw.writes.length;
      const fired = gw.clock.fired;
      const pid = gw.pid();
      process.kill(pid, 'SIGKILL');
      await waitFor(() => gw.writes.length >= before + 2, 10_000, () => `two Lease writes after the kill (writes: ${JSON.stringify(gw.writes)}):\n${gw.logs()}`);
      assert.equal(gw.writes.slice(before), [false, true], `down, then up again:\n${gw.logs()}`);
      assert.is(gw.clock.fired, fired, 'no timer ran: neither write was a scheduled renewal, nor the restart a retry or a repair');
      assert.ok(gw.pid() !== pid && gw.daemonRuns(), 'a new wireguard-go runs');
      await waitFor(() => gw.ready(), 5_000, 'its route and peer back');
      assert.match(gw.logs(), new RegExp(`tunnel backend exited \\{"what":"wireguard-go \\(pid ${pid}\\) for ${gw.device} killed by SIGKILL"\\}`));
      assert.match(gw.logs(), /tunnel backend is down; restoring it \{"reason":"(device \S+ does not exist|wireguard-go \(pid \d+\) for \S+ is not running)"\}/);
      assert.match(gw.logs(), /tunnel backend restored/);

      // Again, at once (no time has passed on the agent's clock): this one waits for its backoff.
      const second = gw.writes.length;
      const pid2 = gw.pid();
      process.kill(pid2, 'SIGKILL');
      await waitFor(() => gw.writes.length > second, 10_000, () => `a Lease write after the second kill:\n${gw.logs()}`);
      assert.is(gw.writes[second], false, 'reported down at once again');
      assert.is(gw.clock.fired, fired, 'still no timer ran');
      // Nothing but the retry timer could start it now; give a wrong restart time to show itself.
      await new Promise((r) => setTimeout(r, 1000));
      assert.not.ok(gw.daemonRuns(), 'not restarted before its backoff');
      assert.ok(SYNC_RETRY_MS < BACKEND_STABLE_MS);
      await gw.clock.advance(SYNC_RETRY_MS);
      await waitFor(() => gw.writes.at(-1) === true && gw.daemonRuns(), 10_000, () => `the restart after the backoff (writes: ${JSON.stringify(gw.writes)}):\n${gw.logs()}`);
      assert.ok(gw.pid() !== pid2);
      assert.not.match(gw.logs(), /^error /m, 'nothing failed on the way');
    } finally {
      await gw.stop();
    }
  });

  test('a wireguard-go the agent stops itself (stepping down, stopping) is not reported as an exit', async () => {
    const gw = await startGateway('bs');
    await gw.stop();
    assert.not.match(gw.logs(), /tunnel backend exited/);
  });

  /** Collects what `onExit` reports; `next(n)` waits until there are `n`. */
  const exits = () => {
    const seen: string[] = [];
    return {
      seen,
      onExit: (what: string): void => void seen.push(what),
      next: (n: number): Promise<void> => waitFor(() => seen.length >= n, 5_000, () => `exit report ${n} (seen: ${JSON.stringify(seen)})`).then(() => undefined),
    };
  };

  test('the WireGuard executor reports the exit of a wireguard-go it started, and of one it adopted, never of one it stopped', async () => {
    const ns = `${PREFIX}-bw`;
    const device = `rgbw${process.pid % 100000}`.slice(0, 15);
    const stateDir = mkdtempSync(join(tmpdir(), 'raven-exit-wg-'));
    sh('ip', ['netns', 'add', ns]);
    const seen = exits();
    const opts = { device, port: 51862, mtu: 1420, stateDir, netns: ns, runner: new RecordingRunner(), forceUserspace: true, onExit: seen.onExit };
    const pidOf = (): number => Number(readFileSync(join(stateDir, `wireguard-go.${device}.pid`), 'utf8'));
    try {
      const first = new WireGuard(opts);
      assert.is(await first.up(), 'userspace');
      const started = pidOf();
      process.kill(started, 'SIGKILL');
      await seen.next(1);
      assert.equal(seen.seen, [`wireguard-go (pid ${started}) for ${device} killed by SIGKILL`]);
      // Another executor (a restarted agent) adopts the one this one starts: no exit event for it.
      assert.is(await first.up(), 'userspace');
      const adopted = pidOf();
      const second = new WireGuard({ ...opts, onExit: seen.onExit });
      assert.is(await second.up(), 'existing');
      await first.cleanUp().catch(() => undefined);
      await seen.next(2);
      assert.equal(seen.seen.slice(1, 2), [`wireguard-go (pid ${adopted}) for ${device} is gone`], 'seen by the adopter (the starter stopped it on purpose)');
      assert.is(seen.seen.length, 2, 'the executor that stopped it said nothing');
      await second.cleanUp();
    } finally {
      spawnSync('ip', ['netns', 'del', ns]);
      rmSync(stateDir, { recursive: true, force: true });
    }
  });

  if (haveStrongswan()) {
    test('the IPsec executor reports the exit of a charon it started, and of one it adopted', async () => {
      const ns = `${PREFIX}-bi`;
      const stateDir = mkdtempSync(join(tmpdir(), 'raven-exit-ipsec-'));
      sh('ip', ['netns', 'add', ns]);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      const seen = exits();
      const opts = { node: 'node-a', stateDir, netns: ns, runner: new RecordingRunner(), port: 4500, psk: 'x', onExit: seen.onExit };
      const pidOf = (): number => Number(readFileSync(join(stateDir, 'charon.pid'), 'utf8'));
      try {
        const first = new IpsecBackend(opts);
        assert.ok((await first.up()).started);
        const started = pidOf();
        process.kill(started, 'SIGKILL');
        await seen.next(1);
        assert.equal(seen.seen, [`charon (pid ${started}) killed by SIGKILL`]);
        assert.ok((await first.up()).started, 'started again');
        const adopted = pidOf();
        const second = new IpsecBackend(opts);
        assert.not.ok((await second.up()).started, 'adopted');
        process.kill(adopted, 'SIGKILL');
        await seen.next(3);
        assert.equal(seen.seen.slice(1).sort(), [`charon (pid ${adopted}) is gone`, `charon (pid ${adopted}) killed by SIGKILL`], 'its starter and its adopter each saw it');
        await second.cleanUp();
      } finally {
        spawnSync('ip', ['netns', 'del', ns]);
        rmSync(stateDir, { recursive: true, force: true });
      }
    });
  }

  test.after(() => assert.equal(leftovers(), [], 'no namespaces of ours are left'));
}

test.run();
