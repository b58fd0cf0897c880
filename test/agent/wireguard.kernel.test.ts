/**
 * The WireGuard backend on the real kernel: two gateways in throwaway namespaces, a tunnel between
 * them set up from the agent's own plan types, traffic through it, a restart that keeps the key,
 * and nothing left behind. This kernel has no WireGuard module, so wireguard-go is used.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RouteTable } from '../../src/agent/dataplane/route-table.ts';
import { STALE_RENEW_SPACING_MS, WireGuard } from '../../src/agent/dataplane/wireguard.ts';
import type { CommandRunner } from '../../src/platform/command-runner.ts';
import type { PeerPlan } from '../../src/agent/plan.ts';
import { canUseNetns, haveWireGuard, leftovers, pair, RecordingRunner, sh } from '../support/netns.ts';

test('one bad peer (a garbage key, a hostname endpoint, an unparsable range, one wg rejects) is refused alone: every other peer is set', async () => {
  const calls: string[][] = [];
  const rejected = Buffer.alloc(32, 'rejected').toString('base64');
  const fake: CommandRunner = {
    run: async (cmd, args) => {
      calls.push([cmd, ...args]);
      if (args.includes('dump')) return { code: 0, stdout: 'private\tpublic\t4500\toff\n', stderr: '' };
      if (args.includes(rejected)) return { code: 1, stdout: '', stderr: 'Unable to modify interface: Invalid argument' };
      return { code: 0, stdout: '', stderr: '' };
    },
  };
  const wg = new WireGuard({ device: 'raven-wg0', port: 4500, mtu: 1420, stateDir: '/nonexistent', runner: fake });
  const peer = (gateway: string, publicKey: string, extra: Partial<PeerPlan> = {}): PeerPlan => ({ gateway, node: gateway, publicKey, allowedIPs: ['10.99.1.0/24'], path: 'direct', relaysFor: [], localSubnets: [], ...extra });
  const good = Buffer.alloc(32, 'good').toString('base64');
  const r = await wg.setPeers([
    peer('gw-garbage', 'AAAA; wg set raven-wg0 private-key /etc/shadow'),
    peer('gw-hostname', Buffer.alloc(32, 'h').toString('base64'), { endpoint: 'lb.example.com:4500' }),
    peer('gw-octal', Buffer.alloc(32, 'o').toString('base64'), { endpoint: '203.0.113.010:4500' }),
    peer('gw-rejected', rejected),
    peer('gw-range', Buffer.alloc(32, 'r').toString('base64'), { allowedIPs: ['10.98.0.0/24', '10.97.0.0/24,0.0.0.0/0'] }),
    peer('gw-good', good, { endpoint: '203.0.113.10:4500', keepaliveSeconds: 5 }),
  ]);
  assert.equal(r.set, ['gw-range', 'gw-good']);
  assert.equal(wg.refused.map((d) => d.source), ['gw-garbage', 'gw-hostname', 'gw-octal', 'gw-range', 'gw-rejected']);
  const sets = calls.filter((c) => c.includes('set'));
  assert.ok(sets.some((c) => c.includes(good) && c.includes('203.0.113.10:4500')), 'the good peer is set');
  assert.ok(sets.every((c) => !c.some((a) => a.includes('example.com') || a.includes('shadow') || a.includes('0.0.0.0/0'))), 'nothing refused reaches wg');
  assert.ok(sets.some((c) => c.includes(Buffer.alloc(32, 'r').toString('base64')) && c.at(-1) === '10.98.0.0/24'), 'a peer keeps its good ranges');
});


if (!canUseNetns() || !haveWireGuard()) {
  console.warn('needs root, wireguard-tools and wireguard-go: WireGuard backend tests not run');
} else {
  test('two gateways connect through wireguard-go, route remote subnets into it, and ping across', async () => {
    const ns = pair('w1');
    const state = mkdtempSync(join(tmpdir(), 'raven-wg-'));
    const tag = String(process.pid % 100000);
    const a = new WireGuard({ device: `rgwa${tag}`, port: 51820, mtu: 1420, stateDir: join(state, 'a'), netns: ns.a, runner: new RecordingRunner() });
    const b = new WireGuard({ device: `rgwb${tag}`, port: 51821, mtu: 1420, stateDir: join(state, 'b'), netns: ns.b, runner: new RecordingRunner() });
    try {
      assert.is(await a.up(), 'userspace');
      assert.is(await b.up(), 'userspace');
      const [keyA, keyB] = [await a.publicKey(), await b.publicKey()];
      assert.match(keyA, /^[A-Za-z0-9+/]{43}=$/);
      // "Pods": an address per side on lo.
      sh('ip', ['-n', ns.a, 'addr', 'add', '10.99.1.1/32', 'dev', 'lo']);
      sh('ip', ['-n', ns.b, 'addr', 'add', '10.99.2.1/32', 'dev', 'lo']);
      // a is behind NAT in spirit: it dials b and keeps the mapping alive; b waits to be dialed.
      // The side being dialed learns the key first: an initiation reaching a peer that does not know
      // the key yet is dropped, and WireGuard retries only after 5 s (REKEY_TIMEOUT).
      await b.setPeers([{ gateway: 'gw-a', node: 'a', publicKey: keyA, allowedIPs: ['10.99.1.0/24'], path: 'direct', relaysFor: [], localSubnets: [] }]);
      await a.setPeers([{ gateway: 'gw-b', node: 'b', publicKey: keyB, endpoint: '192.168.77.2:51821', allowedIPs: ['10.99.2.0/24'], keepaliveSeconds: 5, path: 'direct', relaysFor: [], localSubnets: [] }]);
      await new RouteTable(new RecordingRunner(), { table: 9031, priority: 9031, netns: ns.a }).set([{ dst: '10.99.2.0/24', dev: `rgwa${tag}`, mtu: 1420 }]);
      await new RouteTable(new RecordingRunner(), { table: 9031, priority: 9031, netns: ns.b }).set([{ dst: '10.99.1.0/24', dev: `rgwb${tag}`, mtu: 1420 }]);
      const ping = spawnSync('ip', ['netns', 'exec', ns.a, 'ping', '-c', '3', '-i', '0.2', '-W', '2', '-I', '10.99.1.1', '10.99.2.1'], { encoding: 'utf8' });
      assert.is(ping.status, 0, ping.stdout + ping.stderr);
      assert.match(ping.stdout, / 0% packet loss/);
      const seen = (await b.peers())[0]!;
      assert.is(seen.endpoint, '192.168.77.1:51820', 'b learned where a dials from');
      assert.ok(seen.latestHandshake > 0, 'a handshake completed');

      // Same plan again: nothing is set. A restarted agent adopts the device and keeps its key.
      assert.equal((await a.setPeers([{ gateway: 'gw-b', node: 'b', publicKey: keyB, endpoint: '192.168.77.2:51821', allowedIPs: ['10.99.2.0/24'], keepaliveSeconds: 5, path: 'direct', relaysFor: [], localSubnets: [] }])).set, []);
      const restarted = new WireGuard({ device: `rgwa${tag}`, port: 51820, mtu: 1420, stateDir: join(state, 'a'), netns: ns.a, runner: new RecordingRunner() });
      assert.is(await restarted.up(), 'existing');
      assert.is(await restarted.publicKey(), keyA);
      // A peer that left the plan is removed; one without a published key is skipped.
      await b.setPeers([{ gateway: 'gw-x', node: 'x', allowedIPs: ['10.99.9.0/24'], path: 'direct', relaysFor: [], localSubnets: [] }]);
      assert.equal(await b.peers(), []);
    } finally {
      await a.cleanUp();
      await b.cleanUp();
      ns.cleanup();
      rmSync(state, { recursive: true, force: true });
    }
    assert.not.ok(existsSync(`/var/run/wireguard/rgwa${tag}.sock`), 'the UAPI socket is removed');
    const procs = sh('ps', ['-eo', 'args']).split('\n').filter((l) => l.includes(`rgwa${tag}`) || l.includes(`rgwb${tag}`));
    assert.equal(procs, [], 'our wireguard-go processes are gone');
  });


  test('failover order: a staged standby key makes the first handshake count; a nudge re-initiates one that was lost', async () => {
    const ns = pair('w2');
    const state = mkdtempSync(join(tmpdir(), 'raven-wg-'));
    const tag = String(process.pid % 100000);
    const runner = new RecordingRunner();
    const dev = { a: `rgwd${tag}`, b: `rgwe${tag}`, b2: `rgwf${tag}` };
    // a: a reachable gateway (the cloud); b, then b2: two nodes of a NATed region, taking turns.
    const a = new WireGuard({ device: dev.a, port: 51840, mtu: 1420, stateDir: join(state, 'a'), netns: ns.a, runner });
    const b = new WireGuard({ device: dev.b, port: 51841, mtu: 1420, stateDir: join(state, 'b'), netns: ns.b, runner });
    const b2 = new WireGuard({ device: dev.b2, port: 51842, mtu: 1420, stateDir: join(state, 'b2'), netns: ns.b, runner });
    const handshook = async (w: WireGuard, ms: number): Promise<boolean> => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        if ((await w.peers()).some((p) => p.latestHandshake > 0)) return true;
        await new Promise((r) => setTimeout(r, 50));
      }
      return false;
    };
    try {
      for (const w of [a, b, b2]) await w.up();
      const [keyA, keyB, keyB2] = [await a.publicKey(), await b.publicKey(), await b2.publicKey()];
      const toA = { gateway: 'gw-a', node: 'a', publicKey: keyA, endpoint: '192.168.77.1:51840', allowedIPs: ['10.99.1.0/24'], keepaliveSeconds: 5, path: 'direct' as const, relaysFor: [], localSubnets: [] };
      const fromB = (publicKey: string) => ({ gateway: 'gw-b', node: 'b', publicKey, allowedIPs: ['10.99.2.0/24'], path: 'direct' as const, relaysFor: [], localSubnets: [] });

      // The naive order: b dials before a knows its key. The initiation is dropped, and WireGuard
      // would retry only after 5 s; a nudge re-creates the peer, which initiates at once.
      await b.setPeers([toA]);
      await new Promise((r) => setTimeout(r, 300));
      await a.setPeers([fromB(keyB)]);
      assert.not.ok(await handshook(b, 1500), 'the lost first initiation is not retried within 1.5 s');
      assert.equal(await b.nudge([toA]), ['gw-a']);
      assert.ok(await handshook(b, 1500), 'after the nudge the handshake completes at once');
      assert.equal(await b.nudge([toA]), [], 'a peer that has handshaken is left alone');

      // Staged: a knows b2's key before b2 is active (no endpoint, no allowed IPs).
      await a.setPeers([fromB(keyB)], [{ gateway: 'gw-b', node: 'b2', publicKey: keyB2 }]);
      const staged = (await a.peers()).find((p) => p.publicKey === keyB2)!;
      assert.equal([staged.allowedIPs, staged.endpoint], [[], undefined], 'a staged peer carries no traffic');
      // Failover: b2 becomes active and dials a before a has heard of the switch.
      await b2.setPeers([toA]);
      assert.ok(await handshook(b2, 1500), "b2's first initiation is accepted: its key was staged");
      // a then learns the switch: the region's destinations move to b2, b becomes the staged one.
      await a.setPeers([fromB(keyB2)], [{ gateway: 'gw-b', node: 'b', publicKey: keyB }]);
      const peers = new Map((await a.peers()).map((p) => [p.publicKey, p]));
      assert.equal(peers.get(keyB2)!.allowedIPs, ['10.99.2.0/24']);
      assert.equal(peers.get(keyB)!.allowedIPs, []);
      assert.is(peers.get(keyB2)!.endpoint, '192.168.77.2:51842', 'a learned where b2 dials from');
    } finally {
      for (const w of [a, b, b2]) await w.cleanUp();
      ns.cleanup();
      rmSync(state, { recursive: true, force: true });
    }
  });

  test('a gateway whose wireguard-go restarted answers nothing on the old session; renewStale starts a new one at once', async () => {
    const ns = pair('w3');
    const state = mkdtempSync(join(tmpdir(), 'raven-wg-'));
    const tag = String(process.pid % 100000);
    const dev = { a: `rgwg${tag}`, b: `rgwh${tag}` };
    // a: a reachable gateway (a cloud standby, say) whose daemon restarts; b: a NATed edge that dials it.
    const make = (who: 'a' | 'b'): WireGuard => new WireGuard({ device: dev[who], port: who === 'a' ? 51850 : 51851, mtu: 1420, stateDir: join(state, who), netns: ns[who], runner: new RecordingRunner() });
    let a = make('a');
    const b = make('b');
    const addressed = (w: 'a' | 'b', mine: string, theirs: string): void => {
      sh('ip', ['-n', ns[w], 'addr', 'add', `${mine}/32`, 'dev', dev[w]]);
      sh('ip', ['-n', ns[w], 'route', 'add', `${theirs}/32`, 'dev', dev[w]]);
    };
    const answers = (ms: number): boolean => spawnSync('ip', ['netns', 'exec', ns.b, 'ping', '-c', '1', '-W', String(ms / 1000), '-I', '10.99.2.1', '10.99.1.1']).status === 0;
    const probeUntil = (ms: number): boolean => {
      const end = Date.now() + ms;
      while (Date.now() < end) if (answers(200)) return true;
      return false;
    };
    try {
      await a.up();
      await b.up();
      const [keyA, keyB] = [await a.publicKey(), await b.publicKey()];
      const fromB = { gateway: 'gw-b', node: 'b', publicKey: keyB, allowedIPs: ['10.99.2.1/32'], path: 'direct' as const, relaysFor: [], localSubnets: [] };
      const toA = { gateway: 'gw-a', node: 'a', publicKey: keyA, endpoint: '192.168.77.1:51850', allowedIPs: ['10.99.1.1/32'], keepaliveSeconds: 5, path: 'direct' as const, relaysFor: [], localSubnets: [] };
      await a.setPeers([fromB]);
      await b.setPeers([toA]);
      addressed('a', '10.99.1.1', '10.99.2.1');
      addressed('b', '10.99.2.1', '10.99.1.1');
      assert.ok(probeUntil(2000), 'b reaches a through the tunnel');

      // a's daemon goes and a new one comes, same key, same peer: it knows none of b's session keys.
      await a.cleanUp();
      a = make('a');
      await a.up();
      assert.is(await a.publicKey(), keyA);
      await a.setPeers([fromB]);
      addressed('a', '10.99.1.1', '10.99.2.1');
      const since = Date.now();
      assert.not.ok(probeUntil(2500), 'b keeps sending on the dead session: nothing is answered (WireGuard gives up after 15 s)');
      const stale = { gateway: 'gw-a', publicKey: keyA, endpoint: toA.endpoint, since };
      assert.equal(await b.renewStale([stale]), ['gw-a']);
      assert.ok(probeUntil(1000), 'after the renewal b reaches a again within a second');
      const peer = (await b.peers())[0]!;
      assert.equal([peer.endpoint, peer.allowedIPs, peer.keepaliveSeconds], ['192.168.77.1:51850', ['10.99.1.1/32'], 5], 'the peer is re-created as it was');
      assert.equal(await b.renewStale([stale]), [], 'not again within the spacing');
      await new Promise((r) => setTimeout(r, STALE_RENEW_SPACING_MS));
      assert.equal(await b.renewStale([stale]), [], 'a session made after the loss began is left alone');
    } finally {
      await a.cleanUp();
      await b.cleanUp();
      ns.cleanup();
      rmSync(state, { recursive: true, force: true });
    }
  });

  test.after(() => assert.equal(leftovers(), []));
}

test.run();
