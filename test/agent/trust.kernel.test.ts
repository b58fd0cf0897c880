/**
 * The critical attack of issue 10, end to end on the real kernel: nodes of another region give
 * themselves hostile InternalIPs and pod ranges (a newline and `netns exec … sh -c …`, `0.0.0.0/1`,
 * loopback, a range over ours), the real controller publishes status, and a real `raven agent` on a
 * member node programs its namespace. Then the controller is bypassed: hostile values are written
 * straight into Gateway status, as anyone allowed to write it could. Either way the node's routing
 * table holds exactly the well-formed remote ranges, and nothing hostile ever runs.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type Cluster, type ControllerProcess, metric, NS, startCluster, startController, waitFor } from '../support/cluster-harness.ts';
import { canUseNetns, PREFIX, sh } from '../support/netns.ts';
import { HOSTILE_CIDRS, HOSTILE_INTERNAL_IPS } from '../support/hostile-values.ts';

const A = `${PREFIX}-tra`;
const B = `${PREFIX}-trb`;
const MARKER = join(tmpdir(), `raven-pwned-${process.pid}`);
const table = (): string[] => sh('ip', ['-n', A, 'route', 'show', 'table', '9031']).split('\n').map((l) => l.trim()).filter(Boolean).sort();

if (!canUseNetns()) {
  console.warn('cannot create network namespaces (not root?): end-to-end trust test not run');
} else {
  let cluster: Cluster;
  let controller: ControllerProcess | undefined;
  let agent: ChildProcess | undefined;
  let out = '';
  let dir: string;
  let beats: NodeJS.Timeout | undefined;
  const merge = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);
  const patchGateway = (name: string, body: object): Promise<unknown> => cluster.custom.patchClusterCustomObject({ group: 'raven.openyurt.io', version: 'v1beta1', plural: 'gateways', name, body }, merge);
  const agentMetrics = async (): Promise<string> => {
    const port = Number(/serving health and metrics port=(\d+)/.exec(out)?.[1]);
    return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  };

  test.before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'raven-trust-'));
    sh('ip', ['netns', 'add', A]);
    sh('ip', ['netns', 'add', B]);
    sh('ip', ['-n', A, 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'lan0', 'netns', B]);
    sh('ip', ['-n', A, 'addr', 'add', '192.168.1.13/24', 'dev', 'lan0']);
    sh('ip', ['-n', B, 'addr', 'add', '192.168.1.11/24', 'dev', 'lan0']);
    for (const ns of [A, B]) for (const l of ['lan0', 'lo']) sh('ip', ['-n', ns, 'link', 'set', l, 'up']);
    cluster = await startCluster();
    // hz-3 joins hangzhou as a plain member (no candidate): its agent only routes, through hz-1.
    await patchGateway('gw-hangzhou', { metadata: { annotations: { 'raven-gitops.io/member-nodes': 'hz-1,hz-2,hz-3' } } });
    const evil = HOSTILE_INTERNAL_IPS.map((_, i) => `qd-evil-${i}`);
    await patchGateway('gw-qingdao', { metadata: { annotations: { 'raven-gitops.io/member-nodes': ['qd-1', 'qd-2', ...evil, 'qd-ranges'].join(',') } } });
    const node = async (name: string, ip: string, cidrs: string[]): Promise<void> => {
      await cluster.core.createNode({ body: { metadata: { name }, spec: { podCIDRs: cidrs } } });
      await cluster.core.replaceNodeStatus({ name, body: { metadata: { name }, status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: ip }] } } as k8s.V1Node });
    };
    await node('hz-3', '192.168.1.13', ['10.244.6.0/24']);
    // The payloads would touch MARKER if a shell ever ran them.
    for (const [i, ip] of HOSTILE_INTERNAL_IPS.entries()) await node(evil[i]!, ip.replace('/tmp/raven-pwned', MARKER), [`10.98.${i}.0/24`]);
    await node('qd-ranges', '10.0.9.40', [...HOSTILE_CIDRS, '10.244.6.0/25', '10.95.0.0/24']);
    const tick = async (): Promise<void> => {
      await Promise.all(['cloud-gw-1', 'hz-1', 'qd-1'].map((n) => cluster.beat(n).catch(() => undefined)));
      beats = setTimeout(() => void tick(), 300);
    };
    void tick();
    controller = await startController(cluster.kubeconfigFile);
    const cfg = join(dir, 'cfg');
    mkdirSync(cfg);
    for (const [k, v] of Object.entries({ 'health-probe-addr': '127.0.0.1:0', 'metric-bind-addr': '127.0.0.1:0', 'forward-node-ip': 'true', 'tunnel-mtu': '1420' })) writeFileSync(join(cfg, k), v);
    agent = spawn(process.execPath, ['bin/raven.mjs', 'agent', '--kubeconfig', cluster.kubeconfigFile, '--namespace', NS, '--node-name', 'hz-3', '--node-ip', '192.168.1.13', '--netns', A, '--device', `rgt${process.pid % 100000}t`, '--config-dir', cfg, '--state-dir', join(dir, 'state')], { stdio: ['ignore', 'pipe', 'pipe'] });
    agent.stdout!.on('data', (d) => (out += d));
    agent.stderr!.on('data', (d) => (out += d));
  });

  test.after(async () => {
    clearTimeout(beats);
    if (agent && agent.exitCode === null) {
      const exited = new Promise((r) => agent!.once('exit', r));
      agent.kill('SIGTERM');
      await exited;
    }
    await controller?.kill();
    await cluster?.close();
    spawnSync('ip', ['netns', 'del', A]);
    spawnSync('ip', ['netns', 'del', B]);
    rmSync(dir, { recursive: true, force: true });
    rmSync(MARKER, { force: true });
  });

  /** What hz-3 must route, and nothing else: every well-formed remote range via its gateway hz-1. */
  const EXPECTED = [
    '10.0.0.10 via 192.168.1.11 dev lan0 mtu lock 1420',
    '10.0.9.40 via 192.168.1.11 dev lan0 mtu lock 1420',
    '10.244.0.0/24 via 192.168.1.11 dev lan0 mtu lock 1420',
    '10.244.3.0/24 via 192.168.1.11 dev lan0 mtu lock 1420',
    '10.244.4.0/24 via 192.168.1.11 dev lan0 mtu lock 1420',
    '10.95.0.0/24 via 192.168.1.11 dev lan0 mtu lock 1420',
    ...HOSTILE_INTERNAL_IPS.map((_, i) => `10.98.${i}.0/24 via 192.168.1.11 dev lan0 mtu lock 1420`),
  ].sort();

  test('hostile node values through the real controller and agent: the kernel gets exactly the good routes, and no payload runs', async () => {
    await waitFor(() => table().length === EXPECTED.length && table(), 30_000, () => `hz-3's table to settle; it has:\n${table().join('\n')}\nagent:\n${out.slice(-3000)}`);
    assert.equal(table(), EXPECTED, 'qd-1 and qd-2 share hangzhou\'s node addresses: their host routes are refused too');
    assert.equal(sh('ip', ['-n', A, 'rule', 'show']).match(/lookup 9031/g)?.length, 1);
    assert.equal(sh('ip', ['-n', A, 'route', 'show', 'table', 'main']).trim().split('\n').filter((l) => !l.includes('lan0')), [], 'main is untouched');
    assert.not.ok(existsSync(MARKER), 'no payload ran');
  });

  test('hostile values written straight into Gateway status (the controller bypassed) are refused by the agent itself, and counted', async () => {
    await controller!.kill();
    controller = undefined;
    const gw = await cluster.gateway('gw-qingdao');
    const nodes = [
      ...gw.status!.nodes!,
      { nodeName: 'qd-direct', privateIP: `192.168.1.13\nnetns exec ${A} sh -c "touch ${MARKER}"`, subnets: ['0.0.0.0/1', '128.0.0.0/1', '10.244.6.0/24', '10.94.0.0/24'] },
      { nodeName: 'qd direct', privateIP: '10.0.9.41', subnets: ['10.93.0.0/24'] },
    ];
    await cluster.custom.replaceClusterCustomObjectStatus({ group: 'raven.openyurt.io', version: 'v1beta1', plural: 'gateways', name: 'gw-qingdao', body: { ...gw, status: { ...gw.status, nodes } } });
    const want = [...EXPECTED, '10.94.0.0/24 via 192.168.1.11 dev lan0 mtu lock 1420'].sort();
    await waitFor(() => table().join('\n') === want.join('\n'), 15_000, () => `hz-3's table; it has:\n${table().join('\n')}`);
    assert.not.ok(existsSync(MARKER), 'no payload ran');
    const m = await agentMetrics();
    assert.ok(metric(m, 'raven_agent_refused_values{kind="node-ip"}') >= 1, m.split('\n').filter((l) => l.includes('refused')).join('\n'));
    assert.ok(metric(m, 'raven_agent_refused_values{kind="subnet"}') >= 2);
    assert.ok(metric(m, 'raven_agent_refused_values{kind="node"}') >= 1, 'the entry whose name is no node name');
    assert.ok(metric(m, 'raven_agent_refused_values{kind="subnet-conflict"}') >= 1, 'our own range claimed by another region');
    assert.match(out, /refused a value from the cluster/);
    assert.not.match(out, new RegExp(`\nnetns exec ${A}`), 'logs show hostile text escaped');
  });
}

test.run();
