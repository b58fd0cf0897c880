/** Pure pieces of the agent's health and address handling, and the address executor's commands. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { CommandRunner } from '../../src/platform/command-runner.ts';
import { anchorOf } from '../../src/agent/plan.ts';
import { parsePingRtt, PROBE_WINDOW, ProbeWindow, roundRobin } from '../../src/agent/probes.ts';
import { missingSubnetAnchors, TunnelAddresses } from '../../src/agent/dataplane/tunnel-addresses.ts';

test('probe window: loss over the last results, latest RTT, the run of losses, forgetting departed peers', () => {
  const w = new ProbeWindow();
  assert.is(w.stats('gw-a'), undefined);
  w.record('gw-a', 'a-1', { ok: true, rttMs: 1.5, at: 0 });
  w.record('gw-a', 'a-1', { ok: false, at: 250 });
  w.record('gw-a', 'a-1', { ok: true, rttMs: 0.7, at: 500 });
  w.record('gw-a', 'a-1', { ok: false, at: 750 });
  w.record('gw-a', 'a-1', { ok: false, at: 1000 });
  assert.equal(w.stats('gw-a'), { node: 'a-1', loss: 0.6, rttMs: 0.7, samples: 5, lostProbes: 2, answeredProbes: 0, lostSince: 750 });
  for (let i = 0; i < PROBE_WINDOW; i++) w.record('gw-a', 'a-1', { ok: true, rttMs: 2, at: 1250 + i });
  assert.equal(w.stats('gw-a'), { node: 'a-1', loss: 0, rttMs: 2, samples: PROBE_WINDOW, lostProbes: 0, answeredProbes: PROBE_WINDOW }, 'only the window counts');
  w.record('gw-b', 'b-1', { ok: false, at: 5 });
  assert.equal(w.stats('gw-b'), { node: 'b-1', loss: 1, samples: 1, lostProbes: 1, answeredProbes: 0, lostSince: 5 });
  w.retain(new Set(['gw-b']));
  assert.equal(w.targets(), ['gw-b']);
});

test('probe window: a new active node on the far side starts a clean record', () => {
  const w = new ProbeWindow();
  for (let i = 0; i < 4; i++) w.record('gw-a', 'a-1', { ok: false, at: i });
  w.record('gw-a', 'a-2', { ok: true, rttMs: 3, at: 10 });
  assert.equal(w.stats('gw-a'), { node: 'a-2', loss: 0, rttMs: 3, samples: 1, lostProbes: 0, answeredProbes: 1 });
});

test('round robin: bounded batches that visit every peer in turn', () => {
  const peers = ['a', 'b', 'c', 'd', 'e'];
  let cursor = 0;
  const seen: string[][] = [];
  for (let i = 0; i < 3; i++) {
    const r = roundRobin(peers, cursor, 2);
    seen.push(r.batch);
    cursor = r.cursor;
  }
  assert.equal(seen, [['a', 'b'], ['c', 'd'], ['e', 'a']]);
  assert.equal(roundRobin(peers, 3, 16).batch, ['d', 'e', 'a', 'b', 'c'], 'never more than there are');
  assert.equal(roundRobin([], 5, 4), { batch: [], cursor: 0 });
  assert.equal(roundRobin(peers, 99, 1).batch, ['e'], 'a cursor from a longer list wraps');
});

test('ping output: RTT in milliseconds, or nothing', () => {
  assert.is(parsePingRtt('64 bytes from 10.244.0.0: icmp_seq=1 ttl=64 time=0.412 ms\n'), 0.412);
  assert.is(parsePingRtt('64 bytes from 10.244.0.0: icmp_seq=1 ttl=64 time=12 ms'), 12);
  assert.is(parsePingRtt('1 packets transmitted, 0 received, 100% packet loss'), undefined);
});

test('probe addresses: the network address of the first pod subnet; none for tiny or bad subnets', () => {
  assert.is(anchorOf('10.244.1.0/24'), '10.244.1.0');
  assert.is(anchorOf('10.244.1.64/26'), '10.244.1.64');
  assert.is(anchorOf('fd00:10:244:1::/64'), 'fd00:10:244:1::');
  assert.is(anchorOf('10.244.1.4/31'), undefined);
  assert.is(anchorOf('fd00::/127'), undefined);
  assert.is(anchorOf('not a cidr'), undefined);
  assert.is(anchorOf(undefined), undefined);
});

test('kernel-libipsec anchors: the last address of each local subnet the host has no address in', () => {
  const owned = ['10.244.1.1', '192.168.1.11', '10.244.1.0'];
  assert.equal(missingSubnetAnchors(['10.244.1.0/24', '10.244.2.0/24', '10.244.3.64/26', 'fd00:2::/64', '10.244.2.0/24'], owned), ['10.244.2.255', '10.244.3.127', 'fd00:2::ffff:ffff:ffff:ffff']);
  assert.equal(missingSubnetAnchors(['10.244.1.0/24'], owned), [], 'an owned address in the subnet suffices');
  assert.equal(missingSubnetAnchors(['192.168.1.11/32'], owned), [], 'a node IP /32 the host owns');
});

test('address executor: reads with ip -json, adds and removes only host addresses on our device', async () => {
  const calls: string[] = [];
  const addrs = [
    { family: 'inet', local: '10.244.1.0', prefixlen: 32, scope: 'global' },
    { family: 'inet', local: '10.244.9.255', prefixlen: 32, scope: 'global' },
    { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
  ];
  const fake: CommandRunner = {
    run: async (cmd, args) => {
      calls.push([cmd, ...args].join(' '));
      return { code: 0, stdout: args.includes('-json') ? JSON.stringify([{ ifname: 'ipsec0', addr_info: addrs }]) : '', stderr: '' };
    },
  };
  const r = await new TunnelAddresses(fake, 'ns1').set('ipsec0', ['10.244.1.0', '10.244.2.255', 'fd00:2::ffff']);
  assert.equal(r, { added: ['10.244.2.255', 'fd00:2::ffff'], removed: ['10.244.9.255'] });
  assert.equal(calls, [
    'ip -n ns1 -json addr show dev ipsec0',
    'ip -n ns1 addr del 10.244.9.255/32 dev ipsec0',
    'ip -n ns1 addr add 10.244.2.255/32 dev ipsec0',
    'ip -n ns1 addr add fd00:2::ffff/128 dev ipsec0 nodad',
  ]);
});

test.run();
