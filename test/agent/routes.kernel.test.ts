/** Routes and rules on the real kernel, inside throwaway network namespaces. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { CommandRunner } from '../../src/platform/command-runner.ts';
import type { RoutePlan } from '../../src/agent/plan.ts';
import { diffRoutes, RouteTable } from '../../src/agent/dataplane/route-table.ts';
import { canUseNetns, leftovers, pair, RecordingRunner, sh } from '../support/netns.ts';

const TABLE = { table: 9031, priority: 9031 };
const r = (dst: string, via: string, mtu = 1420): RoutePlan => ({ dst, via, mtu });

test('the diff of desired and current routes is exactly what differs', () => {
  const d = diffRoutes(
    [r('10.1.0.0/24', '192.168.77.2'), r('10.2.0.0/24', '192.168.77.2'), r('10.3.0.0/24', '192.168.77.2', 1400)],
    [r('10.2.0.0/24', '192.168.77.2'), r('10.3.0.0/24', '192.168.77.2'), r('10.0.0.10', '192.168.77.2')],
  );
  assert.equal(d, { add: [r('10.0.0.10/32', '192.168.77.2')], change: [r('10.3.0.0/24', '192.168.77.2')], remove: ['10.1.0.0/24'], refused: [] });
});

/** Values an attacker can put in Gateway status (through a node's InternalIP or pod CIDR) to reach `ip -batch`. */
const HOSTILE_ROUTES: RoutePlan[] = [
  r('10.7.0.0/24', '192.168.77.2\nnetns exec x sh -c "touch /tmp/pwned"'),
  r('10.7.1.0/24\nroute add 0.0.0.0/1 via 192.168.77.2', '192.168.77.2'),
  r('10.7.2.0/24 table main', '192.168.77.2'),
  r('10.7.3.0/24', '192.168.77.2 dev lo'),
  r('10.7.4.0/24', '-force'),
  r('10.7.5.0/24', 'fd77::2'),
  r('10.7.6.0/24', '192.168.77.2', 1420.5),
  { dst: '10.7.7.0/24', dev: 'lo; reboot', mtu: 1420 },
  { dst: '10.7.8.0/24', mtu: 1420 },
];

test('hostile route values are refused one by one, never rendered into the batch; the good route next to them is written', async () => {
  const batches: string[] = [];
  const fake: CommandRunner = {
    run: async (_cmd, args, input) => {
      if (input) batches.push(input);
      return { code: 0, stdout: args.includes('-json') ? '[]' : '', stderr: '' };
    },
  };
  const res = await new RouteTable(fake, TABLE).set([...HOSTILE_ROUTES, r('10.8.0.0/24', '192.168.77.2')]);
  assert.equal(batches, ['route replace 10.8.0.0/24 via 192.168.77.2 table 9031 mtu lock 1420\n']);
  assert.is(res.refused.length, HOSTILE_ROUTES.length);
  assert.equal(res.add.map((x) => x.dst), ['10.8.0.0/24']);
});

test('executor commands are argument arrays rendered as text: one batch for many routes', async () => {
  const calls: string[] = [];
  const fake: CommandRunner = {
    run: async (cmd, args, input) => {
      calls.push([cmd, ...args].join(' ') + (input ? ` <<< ${input.trim().split('\n').join(' | ')}` : ''));
      return { code: 0, stdout: args.includes('-json') ? '[]' : '', stderr: '' };
    },
  };
  await new RouteTable(fake, { ...TABLE, netns: 'ns1' }).set([r('10.1.0.0/24', '192.168.77.2'), { dst: 'fd00:3::/64', dev: 'raven-wg0', mtu: 1420 }]);
  assert.equal(calls, [
    'ip -n ns1 -4 -json rule show',
    'ip -n ns1 -4 rule add pref 9031 lookup 9031',
    'ip -n ns1 -6 -json rule show',
    'ip -n ns1 -6 rule add pref 9031 lookup 9031',
    'ip -n ns1 -4 -json route show table 9031',
    'ip -n ns1 -6 -json route show table 9031',
    'ip -n ns1 -batch - <<< route replace 10.1.0.0/24 via 192.168.77.2 table 9031 mtu lock 1420 | route replace fd00:3::/64 dev raven-wg0 table 9031 mtu lock 1420',
  ]);
});

if (!canUseNetns()) {
  console.warn('cannot create network namespaces (not root?): real-kernel route tests not run');
} else {
  test('routes land in our table exactly as planned, then nothing is written when nothing changed', async () => {
    const ns = pair('r1');
    try {
      const run = new RecordingRunner();
      const t = new RouteTable(run, { ...TABLE, netns: ns.a });
      const desired = [r('10.244.3.0/24', '192.168.77.2'), r('10.0.0.10/32', '192.168.77.2'), { dst: 'fd00:3::/64', via: 'fd77::2', mtu: 1400 }, { dst: '10.244.9.0/24', dev: ns.devA, mtu: 1420 }];
      await t.set(desired);
      assert.equal(await t.current(), [...desired].sort((x, y) => (x.dst < y.dst ? -1 : 1)));
      assert.match(sh('ip', ['-n', ns.a, 'rule', 'show']), /9031:\s+from all lookup 9031/);
      assert.match(sh('ip', ['-n', ns.a, '-6', 'rule', 'show']), /9031:\s+from all lookup 9031/);
      // The kernel really uses them: a lookup for a remote pod goes to the gateway.
      assert.match(sh('ip', ['-n', ns.a, 'route', 'get', '10.244.3.7']), /via 192\.168\.77\.2 .*table 9031/);
      // Anything else falls through to main: the local LAN is not touched.
      assert.not.match(sh('ip', ['-n', ns.a, 'route', 'get', '192.168.77.2']), /table 9031/);
      run.log.length = 0;
      const again = await t.set(desired);
      assert.equal([again.add.length, again.change.length, again.remove.length, again.ruleAdded], [0, 0, 0, false]);
      assert.equal(run.writes(), [], 'an unchanged plan writes nothing');
    } finally {
      ns.cleanup();
    }
  });

  test('a changed plan writes only the difference, in one batch', async () => {
    const ns = pair('r2');
    try {
      const run = new RecordingRunner();
      const t = new RouteTable(run, { ...TABLE, netns: ns.a });
      await t.set([r('10.1.0.0/24', '192.168.77.2'), r('10.2.0.0/24', '192.168.77.2'), r('10.3.0.0/24', '192.168.77.2')]);
      run.log.length = 0;
      await t.set([r('10.2.0.0/24', '192.168.77.2'), r('10.3.0.0/24', '192.168.77.2', 1380), r('10.4.0.0/24', '192.168.77.2')]);
      assert.equal(run.writes(), [
        `ip -n ${ns.a} -batch -\nroute del 10.1.0.0/24 table 9031\nroute replace 10.4.0.0/24 via 192.168.77.2 table 9031 mtu lock 1420\nroute replace 10.3.0.0/24 via 192.168.77.2 table 9031 mtu lock 1380`,
      ]);
    } finally {
      ns.cleanup();
    }
  });

  test('cleanUp removes only our routes and rules; other tables, routes and rules stay', async () => {
    const ns = pair('r3');
    try {
      sh('ip', ['-n', ns.a, 'route', 'add', '10.99.0.0/16', 'via', '192.168.77.2']);
      sh('ip', ['-n', ns.a, 'route', 'add', '10.98.0.0/16', 'via', '192.168.77.2', 'table', '100']);
      sh('ip', ['-n', ns.a, 'rule', 'add', 'pref', '1000', 'lookup', '100']);
      const t = new RouteTable(new RecordingRunner(), { ...TABLE, netns: ns.a });
      await t.set([r('10.1.0.0/24', '192.168.77.2'), { dst: 'fd00:1::/64', via: 'fd77::2', mtu: 1420 }]);
      await t.cleanUp();
      assert.equal(await t.current(), []);
      assert.not.match(sh('ip', ['-n', ns.a, 'rule', 'show']) + sh('ip', ['-n', ns.a, '-6', 'rule', 'show']), /lookup 9031/);
      assert.match(sh('ip', ['-n', ns.a, 'route', 'show']), /10\.99\.0\.0\/16 via 192\.168\.77\.2/);
      assert.match(sh('ip', ['-n', ns.a, 'route', 'show', 'table', '100']), /10\.98\.0\.0\/16/);
      assert.match(sh('ip', ['-n', ns.a, 'rule', 'show']), /1000:\s+from all lookup 100/);
    } finally {
      ns.cleanup();
    }
  });

  test('after a crash, a fresh executor converges from whatever the last one left; transitions in any order end in the same state', async () => {
    const ns = pair('r4');
    try {
      const plans = [
        [r('10.1.0.0/24', '192.168.77.2'), r('10.2.0.0/24', '192.168.77.2')],
        [r('10.2.0.0/24', '192.168.77.2', 1300), { dst: 'fd00:2::/64', via: 'fd77::2', mtu: 1300 }],
        [],
        [r('10.5.0.0/24', '192.168.77.2'), { dst: '10.6.0.0/24', dev: ns.devA, mtu: 1420 }],
      ];
      const target = plans[3]!;
      for (const permutation of [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]]) {
        const order = permutation.map((i) => plans[i]!);
        for (const p of [...order, target]) await new RouteTable(new RecordingRunner(), { ...TABLE, netns: ns.a }).set(p);
        assert.equal(await new RouteTable(new RecordingRunner(), { ...TABLE, netns: ns.a }).current(), [...target].sort((x, y) => (x.dst < y.dst ? -1 : 1)));
        const rules = (sh('ip', ['-n', ns.a, 'rule', 'show']).match(/lookup 9031/g) ?? []).length;
        assert.is(rules, 1, 'restarts never duplicate the rule');
      }
    } finally {
      ns.cleanup();
    }
  });

  test('on the kernel, a hostile plan changes nothing but the well-formed route, and runs no command', async () => {
    const ns = pair('r5');
    try {
      const t = new RouteTable(new RecordingRunner(), { ...TABLE, netns: ns.a });
      await t.set([...HOSTILE_ROUTES, r('10.8.0.0/24', '192.168.77.2')]);
      assert.equal(sh('ip', ['-n', ns.a, 'route', 'show', 'table', '9031']).trim(), '10.8.0.0/24 via 192.168.77.2 dev ' + ns.devA + ' mtu lock 1420');
      assert.equal(sh('ip', ['-n', ns.a, 'route', 'show', 'table', 'main']).trim().split('\n').filter((l) => !l.includes(ns.devA)), [], 'main is untouched');
      assert.equal(sh('ip', ['-n', ns.a, 'rule', 'show']).match(/lookup 9031/g)?.length, 1);
    } finally {
      ns.cleanup();
    }
  });

  test.after(() => assert.equal(leftovers(), [], 'no namespaces of ours are left'));
}

test.run();
