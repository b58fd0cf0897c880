/**
 * Whole-node convergence on the real kernel: the agent's apply step (tunnel + routes) driven by
 * real plans for one node as the cluster changes around it (gateway, standby, NAT traversal,
 * relay, IPsec-free WireGuard only: this file needs no strongSwan), applied in random orders and by
 * fresh executors (a restarted agent). Whatever the path, the kernel ends in the state the final
 * plan describes, and the same as applying that plan once from scratch.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { applyPlan } from '../../src/agent/agent.ts';
import { plan, type PlanOptions } from '../../src/agent/plan.ts';
import { RouteTable } from '../../src/agent/dataplane/route-table.ts';
import { makeTunnel } from '../../src/agent/dataplane/tunnel.ts';
import { type Gateway, STANDBY_KEYS_CONFIG } from '../../src/contract/gateway.ts';
import { canUseNetns, haveWireGuard, leftovers, PREFIX, RecordingRunner, sh } from '../support/netns.ts';

const key = (): string => spawnSync('wg', ['pubkey'], { input: spawnSync('wg', ['genkey'], { encoding: 'utf8' }).stdout, encoding: 'utf8' }).stdout.trim();

if (!canUseNetns() || !haveWireGuard()) {
  console.warn('needs root, wireguard-tools and wireguard-go: convergence tests not run');
} else {
  test('plans applied in any order, by any number of restarted agents, end in the state the last plan describes', async () => {
    const ns = `${PREFIX}-conv`;
    const device = `rgcv${process.pid % 100000}`;
    const state = mkdtempSync(join(tmpdir(), 'raven-conv-'));
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    // hz-1's LAN (members route via the active gateway's LAN address).
    sh('ip', ['-n', ns, 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'lan1']);
    sh('ip', ['-n', ns, 'addr', 'add', '192.168.1.11/24', 'dev', 'lan0']);
    for (const l of ['lan0', 'lan1']) sh('ip', ['-n', ns, 'link', 'set', l, 'up']);
    const K = { cloud: key(), hz2: key(), qd: key(), qd2: key() };
    const world = (o: { hzActive?: string; natTraversal?: boolean; qdStandbyKey?: boolean; forwardNodeIP?: boolean }): { gateways: Gateway[]; opts: Partial<PlanOptions> } => {
      const edge = (natType: string, ip: string) => (o.natTraversal ? { natType, publicIP: ip, publicPort: 4500 } : {});
      const gws: Gateway[] = [
        {
          metadata: { name: 'gw-cloud' },
          spec: { exposeType: 'PublicIP', endpoints: [{ nodeName: 'cloud-1', type: 'tunnel' }] },
          status: { activeEndpoints: [{ nodeName: 'cloud-1', type: 'tunnel', port: 4500, publicIP: '203.0.113.10', config: { publicKey: K.cloud } }], nodes: [{ nodeName: 'cloud-1', privateIP: '10.0.0.10', subnets: ['10.244.0.0/24'] }] },
        },
        {
          metadata: { name: 'gw-hangzhou' },
          spec: { endpoints: [{ nodeName: 'hz-1', type: 'tunnel' }, { nodeName: 'hz-2', type: 'tunnel' }] },
          status: {
            activeEndpoints: o.hzActive ? [{ nodeName: o.hzActive, type: 'tunnel', port: 4500, underNAT: true, ...edge('Full Cone', '198.51.100.21'), config: { publicKey: o.hzActive === 'hz-2' ? K.hz2 : 'unused' } }] : [],
            nodes: [{ nodeName: 'hz-1', privateIP: '192.168.1.11', subnets: ['10.244.1.0/24'] }, { nodeName: 'hz-2', privateIP: '192.168.1.12', subnets: ['10.244.2.0/24'] }],
          },
        },
        {
          metadata: { name: 'gw-qingdao' },
          spec: { endpoints: [{ nodeName: 'qd-1', type: 'tunnel' }, { nodeName: 'qd-2', type: 'tunnel' }] },
          status: {
            activeEndpoints: [{ nodeName: 'qd-1', type: 'tunnel', port: 4500, underNAT: true, ...edge('Full Cone', '198.51.100.31'), config: { publicKey: K.qd, ...(o.qdStandbyKey && { [STANDBY_KEYS_CONFIG]: JSON.stringify({ 'qd-2': K.qd2 }) }) } }],
            nodes: [{ nodeName: 'qd-1', privateIP: '192.168.1.11', subnets: ['10.244.3.0/24'] }, { nodeName: 'qd-2', privateIP: '192.168.1.12', subnets: ['10.244.4.0/24'] }],
          },
        },
      ];
      return { gateways: gws, opts: { natTraversal: !!o.natTraversal, forwardNodeIP: !!o.forwardNodeIP } };
    };
    const planFor = (w: ReturnType<typeof world>) => plan(w.gateways, { node: 'hz-1', backend: 'wireguard', device, natTraversal: false, forwardNodeIP: false, mtu: 0, underlayMTU: 1500, ...w.opts });
    const plans = [
      planFor(world({ hzActive: 'hz-1' })), // gateway, qingdao relayed through the cloud
      planFor(world({ hzActive: 'hz-1', natTraversal: true, qdStandbyKey: true })), // gateway, qingdao direct, its standby staged
      planFor(world({ hzActive: 'hz-2' })), // standby: routes via hz-2, no tunnel
      planFor(world({ hzActive: 'hz-1', forwardNodeIP: true })), // gateway, node IPs too
      planFor(world({})), // no active gateway: nothing routed
    ];
    assert.equal(plans.map((p) => p.role), ['gateway', 'gateway', 'standby', 'gateway', 'standby']);
    const fresh = () => {
      const runner = new RecordingRunner();
      return { tunnel: makeTunnel({ backend: 'wireguard', node: 'hz-1', device, port: 51850, mtu: 1420, stateDir: state, runner, netns: ns }), routes: new RouteTable(runner, { table: 9031, priority: 9031, netns: ns }) };
    };
    const snapshot = (): string => {
      const link = spawnSync('ip', ['-n', ns, '-o', 'link', 'show', 'dev', device], { encoding: 'utf8' });
      const peers = link.status === 0 ? sh('ip', ['netns', 'exec', ns, 'wg', 'show', device, 'dump']).trim().split('\n').slice(1).map((l) => l.split('\t')).map(([k, , ep, ips, , , , ka]) => [k, ep, ips, ka].join(' ')).sort() : [];
      const addrs = link.status === 0 ? sh('ip', ['-n', ns, '-o', 'addr', 'show', 'dev', device]).trim().split('\n').filter((l) => l && !l.includes('scope link')).map((l) => l.split(/\s+/).slice(2, 4).join(' ')) : [];
      return JSON.stringify({
        link: link.status === 0 ? / mtu (\d+) /.exec(link.stdout)![1] : null,
        peers,
        addrs,
        routes: spawnSync('ip', ['-n', ns, 'route', 'show', 'table', '9031'], { encoding: 'utf8' }).stdout.trim(),
        rules: (sh('ip', ['-n', ns, 'rule', 'show']).match(/lookup 9031/g) ?? []).length,
      }, null, 1);
    };
    let rng = 11;
    const random = () => ((rng = (rng * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    try {
      for (const [i, target] of plans.entries()) {
        // The reference: the target applied once, from scratch.
        await fresh().tunnel.cleanUp();
        await fresh().routes.cleanUp();
        await applyPlan(target, fresh().tunnel, fresh().routes);
        const reference = snapshot();
        for (let round = 0; round < 3; round++) {
          const path = plans.map((p) => [random(), p] as const).sort((a, b) => a[0] - b[0]).map(([, p]) => p).slice(0, 3);
          // Each step by a new executor pair half of the time: a restarted agent picks up where the last left off.
          let exec = fresh();
          for (const p of [...path, target]) {
            if (random() < 0.5) exec = fresh();
            await applyPlan(p, exec.tunnel, exec.routes);
          }
          assert.is(snapshot(), reference, `plan ${i} (${target.role}), round ${round}`);
          // And applying it again changes nothing at all.
          const runner = new RecordingRunner();
          const again = { tunnel: makeTunnel({ backend: 'wireguard', node: 'hz-1', device, port: 51850, mtu: 1420, stateDir: state, runner, netns: ns }), routes: new RouteTable(runner, { table: 9031, priority: 9031, netns: ns }) };
          await applyPlan(target, again.tunnel, again.routes);
          assert.equal(runner.log.filter((l) => / -batch | rule add | addr add | addr del | peer .* (allowed-ips|remove)/.test(l)), [], `plan ${i}: idempotent`);
        }
        const s = JSON.parse(reference);
        if (target.role === 'gateway') {
          assert.is(s.link, '1420');
          assert.equal(s.addrs, [`inet ${target.probeSource}/32`]);
          assert.is(s.peers.length, target.peers.length + target.staged.length);
        } else assert.is(s.link, null, 'no tunnel off the gateway');
      }
    } finally {
      await fresh().tunnel.cleanUp();
      spawnSync('ip', ['netns', 'del', ns]);
      rmSync(state, { recursive: true, force: true });
    }
    assert.equal(leftovers(), []);
  });
}

test.run();
