/**
 * `raven lab fail` and `restore` arguments, parsed without root and without a lab: what each form
 * means, and the error each bad form gets, word for word where the wording is the help.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { labCommand, LabUsageError, parseDuration, parseFaultArgs } from '../../src/lab/cli.ts';
import { labFail } from '../../src/lab/lab.ts';
import { labNode, planLab } from '../../src/lab/layout.ts';
import { uplinkHostsOf, wanLinkOf, udpBlockRuleset, wanLossRuleset } from '../../src/lab/network.ts';
import { LabState, type LabRecord } from '../../src/lab/state.ts';
import { readSources } from '../../src/compiler/files.ts';
import { compile } from '../../src/compiler/compile.ts';

const ok: [string, 'fail' | 'restore', string[], { what?: string; api?: string | boolean; 'wan-loss'?: string }, unknown][] = [
  ['fail --wan-loss REGION=PCT', 'fail', [], { 'wan-loss': 'hangzhou=20' }, { target: 'wan-loss', region: 'hangzhou', percent: 20 }],
  ['restore --wan-loss REGION', 'restore', [], { 'wan-loss': 'hangzhou' }, { target: 'wan-loss', region: 'hangzhou' }],
  ['fail NODE is a power cut', 'fail', ['hz-1'], {}, { target: 'node', node: 'hz-1', what: 'node' }],
  ['fail NODE --what tunnel', 'fail', ['hz-1'], { what: 'tunnel' }, { target: 'node', node: 'hz-1', what: 'tunnel' }],
  ['fail NODE --what udp-block', 'fail', ['cloud-gw-1'], { what: 'udp-block' }, { target: 'node', node: 'cloud-gw-1', what: 'udp-block' }],
  ['restore NODE leaves the fault to the record', 'restore', ['hz-1'], {}, { target: 'node', node: 'hz-1' }],
  ['restore NODE --what wan', 'restore', ['hz-1'], { what: 'wan' }, { target: 'node', node: 'hz-1', what: 'wan' }],
  ['fail --api 20s', 'fail', [], { api: '20s' }, { target: 'api', ms: 20_000 }],
  ['fail --api 1500ms', 'fail', [], { api: '1500ms' }, { target: 'api', ms: 1500 }],
  ['fail --api 2m', 'fail', [], { api: '2m' }, { target: 'api', ms: 120_000 }],
  ['restore --api', 'restore', [], { api: true }, { target: 'api' }],
  ['a dotted node name', 'fail', ['node-1.example.com'], {}, { target: 'node', node: 'node-1.example.com', what: 'node' }],
];
for (const [name, sub, positionals, values, want] of ok) {
  test(`parses ${name}`, () => assert.equal(parseFaultArgs(sub, positionals, values), want));
}

/** The message `f` fails with. */
async function rejection(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected a failure');
}

const bad: [string, 'fail' | 'restore', string[], { what?: string; api?: string | boolean; 'wan-loss'?: string }, RegExp][] = [
  ['--wan-loss without a region', 'fail', [], { 'wan-loss': '20' }, /^--wan-loss must be REGION=PCT with PCT from 1 to 100 \(hangzhou=20\), not "20"$/],
  ['--wan-loss of 0 %', 'fail', [], { 'wan-loss': 'hangzhou=0' }, /--wan-loss must be REGION=PCT/],
  ['--wan-loss over 100 %', 'fail', [], { 'wan-loss': 'hangzhou=101' }, /--wan-loss must be REGION=PCT/],
  ['--wan-loss with a node', 'fail', ['hz-1'], { 'wan-loss': 'hangzhou=5' }, /^lab fail --wan-loss takes no node, --what or --api$/],
  ['no node', 'fail', [], {}, /^lab fail needs a node name or --api DURATION$/],
  ['two nodes', 'fail', ['hz-1', 'hz-2'], {}, /^lab fail needs a node name or --api DURATION, not 2$/],
  ['restore with no node', 'restore', [], {}, /^lab restore needs a node name or --api$/],
  ['an unknown --what', 'fail', ['hz-1'], { what: 'power' }, /^--what must be one of node, agent, tunnel, wan, udp-block, not "power"$/],
  ['a node name with a slash', 'fail', ['../hz-1'], {}, /^"\.\.\/hz-1" is not a node name/],
  ['a node name with upper case', 'fail', ['HZ-1'], {}, /is not a node name/],
  ['a node name that is an option of ip', 'fail', ['-all'], {}, /is not a node name/],
  ['a node name with a space', 'fail', ['hz 1'], {}, /is not a node name/],
  ['a node and --api', 'fail', ['hz-1'], { api: '10s' }, /^lab fail --api takes no node \(got "hz-1"\)$/],
  ['--api and --what', 'fail', [], { api: '10s', what: 'node' }, /^lab fail --api takes no --what$/],
  ['a bare number', 'fail', [], { api: '20' }, /^--api needs a duration such as 20s, 1500ms or 2m, not "20"$/],
  ['a negative duration', 'fail', [], { api: '-5s' }, /needs a duration/],
  ['a fraction', 'fail', [], { api: '1.5s' }, /needs a duration/],
  ['hours', 'fail', [], { api: '1h' }, /needs a duration/],
  ['an empty duration', 'fail', [], { api: '' }, /needs a duration/],
  ['too short a pause', 'fail', [], { api: '999ms' }, /^--api 999ms: the pause must be from 1s to 60m$/],
  ['zero', 'fail', [], { api: '0s' }, /the pause must be from 1s to 60m/],
  ['too long a pause', 'fail', [], { api: '61m' }, /the pause must be from 1s to 60m/],
  ['restore --api with a node', 'restore', ['hz-1'], { api: true }, /^lab restore --api takes no node/],
];
for (const [name, sub, positionals, values, message] of bad) {
  test(`refuses ${name}`, () => {
    try {
      parseFaultArgs(sub, positionals, values);
    } catch (err) {
      assert.instance(err, LabUsageError);
      assert.match((err as Error).message, message);
      return;
    }
    assert.unreachable('no error');
  });
}

test('durations: the limits themselves are allowed', () => {
  assert.is(parseDuration('1s', '--api'), 1000);
  assert.is(parseDuration('1000ms', '--api'), 1000);
  assert.is(parseDuration('60m', '--api'), 3_600_000);
  assert.is(parseDuration('3600s', '--api'), 3_600_000);
});

test('through labCommand: restore --api is a switch, fail --api needs its value', async () => {
  const io = { stdout: () => undefined, stderr: () => undefined };
  const runDir = mkdtempSync(join(tmpdir(), 'raven-cli-'));
  try {
    // Parsed, then refused for want of a lab (not for its arguments).
    assert.match(await rejection(() => labCommand('restore', ['--api', '--run-dir', runDir], io)), /^no lab is up under /);
    assert.match(await rejection(() => labCommand('fail', ['--run-dir', runDir, '--api'], io)), /argument missing/);
    assert.match(await rejection(() => labCommand('fail', ['hz-1', '--what', 'tunnel', '--run-dir', runDir], io)), /^no lab is up under /);
    assert.match(await rejection(() => labCommand('fail', ['hz-1', '--what', 'nope', '--run-dir', runDir], io)), /^--what must be one of/);
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
});

/** The seed-ha lab's plan, as `lab up` makes it (no kernel involved). */
function seedPlan(): LabRecord['plan'] {
  const read = readSources(['test/fixtures/lab/seed-ha-wireguard.yaml']);
  const t = compile(read.sources).topologies[0]!;
  return planLab(t, { name: 'unit', nodesPerRegion: 2, symmetricNAT: false, wanLossPercent: 0, sameEdgeLAN: false });
}

test('a WAN fault cuts a public node\'s own uplink, and a NATed node\'s region router uplink', () => {
  const plan = seedPlan();
  assert.equal(wanLinkOf(plan, labNode(plan, 'cloud-gw-1')), { port: labNode(plan, 'cloud-gw-1').wanPort, publicIP: '203.0.113.10' });
  const hz = plan.regions.find((r) => r.name === 'hangzhou')!;
  assert.equal(wanLinkOf(plan, labNode(plan, 'hz-3')), { port: hz.nat!.wanPort, publicIP: hz.nat!.publicIP, region: 'hangzhou' });
});

test('an unknown node is refused with the lab\'s nodes listed, before anything is touched', async () => {
  const runDir = mkdtempSync(join(tmpdir(), 'raven-cli-'));
  try {
    const state = new LabState(runDir, 'unit');
    state.create({ plan: seedPlan(), topologyFile: 'x', cluster: 'seedha', namespace: 'raven-system', backend: 'wireguard', forwardNodeIP: false, natTraversal: false, l3Tunnel: true, createdAt: '' });
    assert.is(await rejection(() => labFail(state, 'hz-9', 'tunnel')), 'lab "unit" has no node "hz-9"; its nodes: cloud-gw-1, cloud-gw-2, hz-1, hz-2, hz-3, qd-1, qd-2');
    assert.equal(state.nodeFaults(), []);
  } finally {
    rmSync(runDir, { recursive: true, force: true });
  }
});

test('the UDP block drops both directions of the tunnel port, in and out, and nothing else', () => {
  assert.fixture(
    udpBlockRuleset(4500),
    [
      'table inet raven_lab_block {',
      '  chain block_in {',
      '    type filter hook input priority filter - 10; policy accept;',
      '    udp dport 4500 counter drop',
      '    udp sport 4500 counter drop',
      '  }',
      '  chain block_out {',
      '    type filter hook output priority filter - 10; policy accept;',
      '    udp dport 4500 counter drop',
      '    udp sport 4500 counter drop',
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  assert.throws(() => udpBlockRuleset(0), /port 0 is not 1-65535/);
});

test('WAN loss: both directions of wan0, on the NAT router of a NATed region or every public host of an exposed one', () => {
  const rules = wanLossRuleset(20);
  assert.match(rules, 'iifname "wan0" numgen random mod 100 < 20 counter drop');
  assert.match(rules, 'oifname "wan0" numgen random mod 100 < 20 counter drop');
  assert.throws(() => wanLossRuleset(0), /0 is not a percentage from 1 to 100/);
  const plan = seedPlan();
  assert.equal(uplinkHostsOf(plan, 'hangzhou'), ['rl-unit-r1']);
  assert.equal(uplinkHostsOf(plan, 'cloud'), ['rl-unit-n0', 'rl-unit-n1'], 'both cloud gateways have their own uplink');
  assert.throws(() => uplinkHostsOf(plan, 'mars'), /the lab has no region "mars" \(it has cloud, hangzhou, qingdao\)/);
});

test.run();
