/**
 * The IPsec backend. Rendering and parsing are checked everywhere; on a machine where we are root
 * and strongSwan is installed, two gateways in throwaway namespaces run one charon each
 * (kernel-libipsec: this kernel has no ESP), connect with a PSK, carry pod traffic, survive an
 * agent restart without re-keying, and leave nothing behind. The PSK must never show up in a
 * process's argv, environment, our recorded commands or charon's log.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ExecRunner } from '../../src/platform/command-runner.ts';
import { IpsecBackend, parseListSas, renderSwanctlConf, type IpsecSa } from '../../src/agent/dataplane/ipsec.ts';
import type { PeerPlan } from '../../src/agent/plan.ts';
import { canUseNetns, haveStrongswan, leftovers, pair, RecordingRunner, sh } from '../support/netns.ts';

const peer = (p: Partial<PeerPlan> & Pick<PeerPlan, 'gateway' | 'node'>): PeerPlan => ({ allowedIPs: ['10.98.2.0/24'], localSubnets: ['10.98.2.0/24', 'fd98:2::/64'], path: 'direct', relaysFor: [], ...p });
const runner = new RecordingRunner();

test('config: one IKEv2 PSK connection per peer, identified by Gateway; who initiates; PSK only hex-encoded', () => {
  const psk = 'p"s k}\n{secret';
  const { text, blocks, initiators } = renderSwanctlConf({
    gateway: 'gw-b',
    port: 4500,
    psk,
    peers: [
      // Behind NAT (keepalive): we must dial.
      peer({ gateway: 'gw-c', node: 'node-c', endpoint: '198.51.100.3:4501', keepaliveSeconds: 5, allowedIPs: ['10.98.3.0/24'] }),
      // It dials us.
      peer({ gateway: 'gw-a', node: 'node-a', allowedIPs: ['10.98.1.0/24', 'fd98:1::/64'] }),
      // Both reachable: only the smaller Gateway name starts; gw-b > gw-a2, so we trap.
      peer({ gateway: 'gw-a2', node: 'node-a2', endpoint: '[2001:db8::1]:4500', allowedIPs: ['10.98.4.0/24'] }),
      // Both reachable, gw-b < gw.z: we start.
      peer({ gateway: 'gw.z', node: 'node-z', endpoint: '198.51.100.9:4500', allowedIPs: ['10.98.9.0/24'] }),
      // No destinations: skipped.
      peer({ gateway: 'gw-empty', node: 'node-e', allowedIPs: [] }),
    ],
  });
  assert.equal([...blocks.keys()], ['raven-gw-a', 'raven-gw-a2', 'raven-gw-c', 'raven-gw_z']);
  assert.equal([...initiators].sort(), ['raven-gw-c', 'raven-gw_z']);
  const a = blocks.get('raven-gw-a')!;
  assert.match(a, 'remote_addrs = %any');
  assert.not.match(a, 'remote_port');
  assert.match(a, 'start_action = none');
  assert.match(a, 'id = fqdn:gw-b');
  assert.match(a, 'id = fqdn:gw-a\n', 'the remote identity is its Gateway, whichever node is active there');
  assert.not.match(text, 'node-a', 'node names are not identities');
  assert.match(a, 'local_ts = 10.98.2.0/24,fd98:2::/64');
  assert.match(a, 'remote_ts = 10.98.1.0/24,fd98:1::/64');
  assert.match(blocks.get('raven-gw-a2')!, /remote_addrs = 2001:db8::1\n\s+remote_port = 4500/);
  assert.match(blocks.get('raven-gw-a2')!, 'start_action = trap');
  assert.match(blocks.get('raven-gw-c')!, /remote_addrs = 198\.51\.100\.3\n\s+remote_port = 4501/);
  assert.match(blocks.get('raven-gw-c')!, 'start_action = start');
  assert.match(blocks.get('raven-gw_z')!, 'start_action = start');
  assert.not.ok(text.includes(psk) || text.includes('secret\n') || text.includes('{secret'), 'the PSK is not written as text');
  assert.is(text.match(new RegExp(`secret = 0x${Buffer.from(psk).toString('hex')}\n`, 'g'))?.length, 4, 'one hex secret per connection');
  // No local subnets: nothing can be protected, no connections.
  assert.equal([...renderSwanctlConf({ gateway: 'gw-b', port: 4500, psk, peers: [peer({ gateway: 'gw-a', node: 'node-a', localSubnets: [] })] }).blocks.keys()], []);
  // A relay protects, towards each peer, the regions it relays for that peer too.
  const relay = renderSwanctlConf({ gateway: 'gw-cloud', port: 4500, psk, peers: [peer({ gateway: 'gw-hz', node: 'hz-1', allowedIPs: ['10.98.1.0/24'], localSubnets: ['10.98.0.0/24', '10.98.3.0/24'] })] });
  assert.match(relay.blocks.get('raven-gw-hz')!, 'local_ts = 10.98.0.0/24,10.98.3.0/24');
});

test('config: values that could inject config are refused, each peer on its own; the good peer next to them is configured', () => {
  const base = { gateway: 'gw-b', port: 4500, psk: 'x' };
  assert.throws(() => renderSwanctlConf({ ...base, gateway: 'gw-b\n}', peers: [] }), /ipsec: /, 'our own gateway name');
  const bad: [string, PeerPlan][] = [
    ['peer gateway', peer({ gateway: 'gw a', node: 'a' })],
    ['allowed IP', peer({ gateway: 'gw-a1', node: 'a', allowedIPs: ['10.0.0.0/8\n  }'] })],
    ['prefix', peer({ gateway: 'gw-a2', node: 'a', allowedIPs: ['10.0.0.0/33'] })],
    ['local subnet', peer({ gateway: 'gw-a3', node: 'a', localSubnets: ['10.98.2.0/24,0.0.0.0/0'] })],
    ['endpoint', peer({ gateway: 'gw-a4', node: 'a', endpoint: 'evil.example:4500' })],
    ['endpoint port', peer({ gateway: 'gw-a5', node: 'a', endpoint: '192.0.2.1:0' })],
    ['non-canonical endpoint', peer({ gateway: 'gw-a6', node: 'a', endpoint: '192.0.2.010:4500' })],
  ];
  const good = peer({ gateway: 'gw-good', node: 'g', endpoint: '192.0.2.7:4500', allowedIPs: ['10.98.7.0/24'] });
  const r = renderSwanctlConf({ ...base, peers: [...bad.map(([, p]) => p), good] });
  assert.equal([...r.blocks.keys()], ['raven-gw-good']);
  assert.is(r.refused.length, bad.length, r.refused.map((d) => d.reason).join('\n'));
  for (const [what, p] of bad) assert.ok(r.refused.some((d) => d.source === JSON.stringify(p.gateway) && /ipsec: /.test(d.reason)), `${what}: refused by name`);
  assert.not.ok(/evil|0\.0\.0\.0\/0|\/33|gw a/.test(r.text), 'nothing refused reaches swanctl.conf');
});

test('backend options that could escape their directory or the TUN limits are refused', () => {
  const opts = { node: 'n', runner, port: 4500, psk: 'x' };
  assert.throws(() => new IpsecBackend({ ...opts, stateDir: '/run/raven' }), /under \/run/);
  assert.throws(() => new IpsecBackend({ ...opts, stateDir: '/var/run/raven' }), /under \/run/);
  assert.throws(() => new IpsecBackend({ ...opts, stateDir: 'relative' }), /absolute/);
  assert.throws(() => new IpsecBackend({ ...opts, stateDir: '/var/lib/ra ven' }), /absolute/);
  assert.throws(() => new IpsecBackend({ ...opts, stateDir: `/var/lib/${'x'.repeat(100)}` }), /too long/);
  assert.throws(() => new IpsecBackend({ ...opts, stateDir: '/var/lib/raven', psk: '' }), /PSK/);
  assert.throws(() => new IpsecBackend({ ...opts, stateDir: '/var/lib/raven', mtu: 1412 }), /MTU 1412/, 'the libipsec TUN cannot grow past 1400');
});

test('list-sas output is parsed (format of strongSwan 5.9)', () => {
  const out = [
    'raven-gw-b: #3, ESTABLISHED, IKEv2, 6c4648b31198465d_i* 4b54e37be213737e_r',
    "  local  'node-a' @ 192.168.77.1[4500]",
    "  remote 'node-b' @ 192.168.77.2[4500]",
    '  AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048',
    '  established 0s ago, rekeying in 13674s',
    '  raven-gw-b: #1, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_CBC-128/HMAC_SHA2_256_128',
    '    installed 0s ago, rekeying in 3442s, expires in 3960s',
    '    in  e2bdbf0a,      0 bytes,     0 packets',
    '    out d2d876fd,      0 bytes,     0 packets',
    '    local  10.98.1.0/24 fd98:1::/64',
    '    remote 10.98.2.0/24 fd98:2::/64',
    'raven-gw-c: #4, CONNECTING, IKEv2, 1111111111111111_i* 0000000000000000_r',
    "  local  'node-a' @ 192.168.77.1[4500]",
    "  remote '%any' @ 198.51.100.3[4500]",
    '',
  ].join('\n');
  assert.equal(parseListSas(out, new Map([['raven-gw-b', 'gw-b']])), [
    {
      gateway: 'gw-b', connection: 'raven-gw-b', uniqueId: 3, state: 'ESTABLISHED', remoteId: 'node-b', remote: '192.168.77.2[4500]', establishedSecondsAgo: 0,
      children: [{ name: 'raven-gw-b', state: 'INSTALLED', localTs: ['10.98.1.0/24', 'fd98:1::/64'], remoteTs: ['10.98.2.0/24', 'fd98:2::/64'] }],
    },
    { gateway: 'raven-gw-c', connection: 'raven-gw-c', uniqueId: 4, state: 'CONNECTING', remoteId: '%any', remote: '198.51.100.3[4500]', children: [] },
  ]);
});


if (!canUseNetns() || !haveStrongswan()) {
  console.warn('needs root, strongswan-charon, strongswan-swanctl and libcharon-extra-plugins: IPsec kernel tests not run');
} else {
  const installed = (sas: IpsecSa[]): boolean => sas.some((sa) => sa.state === 'ESTABLISHED' && sa.children.some((c) => c.state === 'INSTALLED'));
  const until = async (what: string, f: () => Promise<boolean>, ms = 5000): Promise<number> => {
    const t0 = Date.now();
    while (!(await f())) {
      if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return Date.now() - t0;
  };
  /** Live processes whose argv or environment mention `needle`. */
  const processesWith = (needle: string, where: 'cmdline' | 'environ'): string[] =>
    readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)
      .filter((d) => {
        try {
          return readFileSync(`/proc/${d}/${where}`, 'latin1').includes(needle);
        } catch {
          return false;
        }
      });
  const ping = (ns: string, from: string, to: string) => new ExecRunner().run('ip', ['netns', 'exec', ns, 'ping', '-c', '3', '-i', '0.2', '-W', '2', '-I', from, to]);

  test('two gateways: one charon each, PSK tunnel up in seconds, pods ping across, restart adopts, nothing left', async () => {
    const ns = pair('i1');
    const state = mkdtempSync(join(tmpdir(), 'raven-ipsec-'));
    const secret = randomBytes(12).toString('hex');
    // Quotes, braces and a newline: must survive the config file unharmed (the two sides must agree).
    const psk = `rgt "${secret}" {\n}`;
    const ra = new RecordingRunner();
    const rb = new RecordingRunner();
    const opts = { port: 4500, psk, forceUserspace: false };
    const a = new IpsecBackend({ ...opts, node: 'node-a', stateDir: join(state, 'a'), netns: ns.a, runner: ra, mtu: 1380 });
    const b = new IpsecBackend({ ...opts, node: 'node-b', stateDir: join(state, 'b'), netns: ns.b, runner: rb });
    // IPsec state that is not ours: a policy in a's namespace. It must survive everything below.
    sh('ip', ['-n', ns.a, 'xfrm', 'policy', 'add', 'src', '10.200.0.0/24', 'dst', '10.201.0.0/24', 'dir', 'out']);
    const toB = [peer({ gateway: 'gw-b', node: 'node-b', endpoint: '192.168.77.2:4500', keepaliveSeconds: 5, allowedIPs: ['10.98.2.0/24'], localSubnets: ['10.98.1.0/24'] })];
    const toA = [peer({ gateway: 'gw-a', node: 'node-a', allowedIPs: ['10.98.1.0/24'], localSubnets: ['10.98.2.0/24'] })];
    let pids: number[] = [];
    try {
      assert.equal(await a.up(), { mode: 'userspace', started: true }, 'no kernel ESP here: kernel-libipsec');
      assert.equal(await b.up(), { mode: 'userspace', started: true });
      pids = [a.pid(), b.pid()].filter((p): p is number => p !== undefined);
      assert.is(pids.length, 2, 'both PIDs recorded');
      assert.is.not(pids[0], pids[1]);
      for (const pid of pids) assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /charon\0$/, 'the recorded PID is charon itself');
      assert.is(a.device, 'ipsec0');
      // Each charon has its own TUN, in its own namespace.
      assert.match(sh('ip', ['-n', ns.a, 'link', 'show', 'ipsec0']), ' mtu 1380 ', 'our MTU');
      assert.match(sh('ip', ['-n', ns.b, 'link', 'show', 'ipsec0']), ' mtu 1400 ', "strongSwan's default MTU");

      // "Pods": an address per side on lo, inside the protected subnets (kernel-libipsec needs a
      // local address in the local subnet to install the route for it).
      sh('ip', ['-n', ns.a, 'addr', 'add', '10.98.1.1/32', 'dev', 'lo']);
      sh('ip', ['-n', ns.b, 'addr', 'add', '10.98.2.1/32', 'dev', 'lo']);
      const t0 = Date.now();
      assert.equal(await b.setPeers(toA, 'gw-b'), { loaded: true, connections: ['raven-gw-a'], removed: [], restarted: [], refused: [] });
      assert.equal((await a.setPeers(toB, 'gw-a')).loaded, true);
      await until('a has an installed CHILD_SA', async () => installed(await a.established()));
      await until('b has an installed CHILD_SA', async () => installed(await b.established()));
      const establishMs = Date.now() - t0;
      console.log(`ipsec: CHILD_SAs installed on both sides ${establishMs} ms after setPeers`);
      assert.ok(establishMs < 5000, `established in ${establishMs} ms`);
      const [saA] = await a.established();
      assert.is(saA!.gateway, 'gw-b');
      assert.is(saA!.remoteId, 'gw-b', 'IKE ids are the Gateway names');
      assert.ok(saA!.establishedSecondsAgo! >= 0 && saA!.establishedSecondsAgo! < 5, 'the SA age is read');
      assert.is(saA!.remote, '192.168.77.2[4500]');
      assert.equal(saA!.children[0]!.localTs, ['10.98.1.0/24']);
      assert.equal(saA!.children[0]!.remoteTs, ['10.98.2.0/24']);
      assert.is((await b.established())[0]!.remote, '192.168.77.1[4500]', 'b sees a at its NAT-T port');
      assert.ok(statSync(join(state, 'a', 'swanctl.conf')).mode % 0o1000 === 0o600, 'the config holding the PSK is 0600');

      // Pod to pod, both ways. Nothing but the tunnel routes 10.98.0.0/16 here.
      assert.match(sh('ip', ['-n', ns.a, 'route', 'get', '10.98.2.1', 'from', '10.98.1.1']), 'dev ipsec0', 'the route to b goes into the tunnel');
      for (const [n, from, to] of [[ns.a, '10.98.1.1', '10.98.2.1'], [ns.b, '10.98.2.1', '10.98.1.1']] as const) {
        const r = await ping(n, from, to);
        assert.is(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, / 0% packet loss/);
      }

      // A full-size packet for our MTU crosses with DF set; one byte more does not leave a.
      const big = (size: number) => new ExecRunner().run('ip', ['netns', 'exec', ns.a, 'ping', '-c', '1', '-W', '2', '-M', 'do', '-s', String(size), '-I', '10.98.1.1', '10.98.2.1']);
      const fits = await big(1380 - 28);
      assert.is(fits.code, 0, fits.stdout + fits.stderr);
      assert.is.not((await big(1380 - 27)).code, 0, 'larger than the tunnel MTU');

      // Same input again: nothing is loaded.
      const loads = (r: RecordingRunner) => r.log.filter((l) => l.includes('--load-all')).length;
      assert.equal([loads(ra), loads(rb)], [1, 1]);
      assert.equal(await a.setPeers(toB, 'gw-a'), { loaded: false, connections: ['raven-gw-b'], removed: [], restarted: [], refused: [] });
      assert.equal((await b.setPeers(toA, 'gw-b')).loaded, false);
      assert.equal([loads(ra), loads(rb)], [1, 1], 'no swanctl --load-all for an unchanged plan');

      // Someone unloads b's connection (loading a config without it): the same input loads it
      // again, since setPeers reads charon's connections rather than remembering them.
      assert.is(await b.problem(), null, 'charon runs and its TUN exists');
      const empty = join(state, 'empty.conf');
      writeFileSync(empty, 'connections {\n}\n');
      sh('env', ['-i', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin', `STRONGSWAN_CONF=${join(state, 'b', 'strongswan.conf')}`, 'swanctl', '--load-conns', '--file', empty, '--uri', b.viciUri]);
      assert.equal(await b.loadedConnections(), []);
      assert.is((await b.setPeers(toA, 'gw-b')).loaded, true, 'reloaded');
      assert.equal(await b.loadedConnections(), ['raven-gw-a']);
      assert.is(loads(rb), 2);

      // An agent restart adopts the running charon; loading the same config does not re-key.
      const ra2 = new RecordingRunner();
      const a2 = new IpsecBackend({ ...opts, node: 'node-a', stateDir: join(state, 'a'), netns: ns.a, runner: ra2, mtu: 1380 });
      assert.equal(await a2.up(), { mode: 'userspace', started: false });
      assert.is(a2.pid(), pids[0]);
      assert.is((await a2.setPeers(toB, 'gw-a')).loaded, true, 'a new agent loads once');
      const [saA2] = await a2.established();
      assert.is(saA2!.uniqueId, saA!.uniqueId, 'same IKE_SA: not re-established');
      assert.is(saA2!.state, 'ESTABLISHED');

      // The PSK appears nowhere: not in any process's argv, not in our charons' environment, not in
      // the commands we ran (nor their input), not in charon's log.
      const hex = Buffer.from(secret).toString('hex');
      for (const needle of [secret, hex]) {
        assert.equal(processesWith(needle, 'cmdline'), [], 'no argv holds the PSK');
        for (const pid of pids) assert.not.ok(readFileSync(`/proc/${pid}/environ`, 'latin1').includes(needle), 'charon environment');
        for (const log of [ra.log, rb.log, ra2.log]) assert.equal(log.filter((l) => l.includes(needle)), [], 'recorded commands');
        for (const side of ['a', 'b']) assert.not.ok(readFileSync(join(state, side, 'charon.log'), 'utf8').includes(needle), 'charon log');
      }
      for (const pid of pids) {
        const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean).map((e) => e.split('=')[0]);
        // (PWD is set by the `sh` that execs charon.)
        assert.equal(env.filter((k) => k !== 'PWD').sort(), ['PATH', 'STRONGSWAN_CONF'], 'charon does not inherit the agent environment (which holds the PSK)');
      }

      // A peer that left the plan: its connection is unloaded and its SA (b only responds) ended.
      const gone = await b.setPeers([], 'gw-b');
      assert.equal(gone, { loaded: true, connections: [], removed: ['raven-gw-a'], restarted: [], refused: [] });
      assert.equal(await b.established(), [], 'b has no SA for a departed peer');

      await a2.cleanUp();
      await b.cleanUp();
      // Stopped: our charons (by PID), their TUN devices, their rule; foreign IPsec state untouched.
      for (const pid of pids) {
        const alive = existsSync(`/proc/${pid}`) && !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
        assert.not.ok(alive, `charon ${pid} stopped`);
      }
      assert.equal(processesWith(`STRONGSWAN_CONF=${state}`, 'environ'), [], 'no process started with our config is left');
      for (const n of [ns.a, ns.b]) {
        assert.is.not(spawnSync('ip', ['-n', n, 'link', 'show', 'ipsec0']).status, 0, 'ipsec0 is gone');
        assert.not.match(sh('ip', ['-n', n, 'rule']), /lookup 220/, 'charon removed its rule');
      }
      assert.match(sh('ip', ['-n', ns.a, 'xfrm', 'policy']), 'src 10.200.0.0/24 dst 10.201.0.0/24', 'foreign xfrm policy kept');
      assert.not.ok(existsSync(join(state, 'a')) || existsSync(join(state, 'b')), 'state files removed');
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
