/**
 * Controller and agents together, on the real kernel: the embedded API server with the seed
 * topology, a real `raven controller`, and real `raven agent` processes for the cloud gateway and
 * the hangzhou gateway, each driving its own network namespace. The agents' heartbeats get them
 * elected, their public keys reach the other side through Gateway status, and pods ping across.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { activeOf, type Cluster, type ControllerProcess, startCluster, startController, waitFor } from './cluster-harness.ts';
import { canUseNetns, leftovers, PREFIX, sh } from './netns.ts';

const haveWg = spawnSync('wg', ['--version']).status === 0 && spawnSync('which', ['wireguard-go']).status === 0;
const tag = String(process.pid % 100000);
const C = `${PREFIX}-e2e-cloud`;
const H = `${PREFIX}-e2e-hz`;
const dev = { cloud: `rgwc${tag}`, hz: `rgwh${tag}` };

interface AgentProcess { proc: ChildProcess; logs(): string; kill(signal: NodeJS.Signals): Promise<void> }

let cluster: Cluster;
let controller: ControllerProcess;
let dir: string;
const agents: Record<string, AgentProcess> = {};

function startAgent(node: string, ip: string, netns: string, device: string): AgentProcess {
  const cfg = join(dir, `cfg-${node}`);
  mkdirSync(cfg, { recursive: true });
  writeFileSync(join(cfg, 'health-probe-addr'), '127.0.0.1:0');
  const proc = spawn(process.execPath, ['bin/raven.mjs', 'agent', '--kubeconfig', cluster.kubeconfigFile, '--namespace', 'raven-system', '--node-name', node, '--node-ip', ip, '--netns', netns, '--device', device, '--config-dir', cfg, '--state-dir', join(dir, `state-${node}`)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  return {
    proc,
    logs: () => out,
    kill: async (signal) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill(signal);
      await exited;
    },
  };
}

/**
 * Asynchronous on purpose: the API server runs in this process, and a blocking spawnSync of a ping
 * that waits a second would freeze it, delaying every heartbeat past its lease.
 */
const ping = (): Promise<boolean> =>
  new Promise((resolve) => spawn('ip', ['netns', 'exec', H, 'ping', '-c', '1', '-W', '1', '-I', '10.244.1.1', '10.244.0.1'], { stdio: 'ignore' }).on('close', (c) => resolve(c === 0)));
const ourRules = (ns: string): number => (sh('ip', ['-n', ns, 'rule', 'show']).match(/lookup 9031/g) ?? []).length;
const ourRoutes = (ns: string): string => spawnSync('ip', ['-n', ns, 'route', 'show', 'table', '9031'], { encoding: 'utf8' }).stdout.trim();

if (!canUseNetns() || !haveWg) {
  console.warn('needs root, wireguard-tools and wireguard-go: agent end-to-end tests not run');
} else {
  test.before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'raven-e2e-'));
    sh('ip', ['netns', 'add', C]);
    sh('ip', ['netns', 'add', H]);
    sh('ip', ['-n', C, 'link', 'add', 'wan0', 'type', 'veth', 'peer', 'name', 'wan0', 'netns', H]);
    sh('ip', ['-n', C, 'addr', 'add', '203.0.113.10/24', 'dev', 'wan0']);
    sh('ip', ['-n', H, 'addr', 'add', '203.0.113.21/24', 'dev', 'wan0']);
    for (const ns of [C, H]) for (const l of ['wan0', 'lo']) sh('ip', ['-n', ns, 'link', 'set', l, 'up']);
    sh('ip', ['-n', C, 'addr', 'add', '10.244.0.1/32', 'dev', 'lo']);
    sh('ip', ['-n', H, 'addr', 'add', '10.244.1.1/32', 'dev', 'lo']);
    cluster = await startCluster();
    controller = await startController(cluster.kubeconfigFile);
    agents.cloud = startAgent('cloud-gw-1', '10.0.0.10', C, dev.cloud);
    agents.hz = startAgent('hz-1', '192.168.1.11', H, dev.hz);
  });

  test.after(async () => {
    for (const a of Object.values(agents)) await a.kill('SIGTERM');
    const controllerLogs = controller?.logs() ?? '';
    await controller?.kill();
    await cluster?.close();
    spawnSync('ip', ['netns', 'del', C]);
    spawnSync('ip', ['netns', 'del', H]);
    rmSync(dir, { recursive: true, force: true });
    assert.equal(leftovers(), []);
    const strays = sh('ps', ['-eo', 'stat,args']).split('\n').filter((l) => (l.includes(dev.cloud) || l.includes(dev.hz)) && !l.startsWith('Z'));
    assert.equal(strays, [], `no wireguard-go of ours is left running; agent logs:\n${Object.entries(agents).map(([k, a]) => `--- ${k} (exit ${a.proc.exitCode ?? a.proc.signalCode})\n${a.logs()}`).join('\n')}\n--- controller\n${controllerLogs}`);
  });

  test('agents get elected by their heartbeats, exchange keys through status, and pods ping across regions', async () => {
    await waitFor(ping, 30_000, () => `a pod ping from hangzhou to the cloud; cloud agent:\n${agents.cloud!.logs()}\nhz agent:\n${agents.hz!.logs()}`);
    const hz = await cluster.gateway('gw-hangzhou');
    assert.equal(activeOf(hz), ['proxy/hz-1', 'tunnel/hz-1']);
    assert.match(hz.status!.activeEndpoints!.find((e) => e.type === 'tunnel')!.config!.publicKey!, /^[A-Za-z0-9+/]{43}=$/);
    assert.match(ourRoutes(H), new RegExp(`10\\.244\\.0\\.0/24 dev ${dev.hz}`));
    // Same-region and other traffic is untouched: only remote-region prefixes are in our table.
    assert.not.match(ourRoutes(H), /10\.244\.1\.0|10\.244\.2\.0/);
  });

  test('an agent killed with SIGKILL and restarted converges without leftovers; the tunnel outlives the process', async () => {
    await agents.cloud!.kill('SIGKILL');
    assert.ok(await ping(), 'the data plane does not depend on the agent process');
    agents.cloud = startAgent('cloud-gw-1', '10.0.0.10', C, dev.cloud);
    // While it was down its heartbeat lapsed and the controller took it out; its heartbeats get it re-elected.
    await waitFor(() => /plan applied role=gateway/.test(agents.cloud!.logs()), 20_000, () => `the restarted agent to be gateway again:\n${agents.cloud!.logs()}`);
    assert.is(ourRules(C), 1, 'no duplicate rule');
    assert.is(sh('ip', ['-n', C, 'link', 'show']).split('\n').filter((l) => l.includes(dev.cloud)).length, 1, 'the device was adopted, not duplicated');
    await waitFor(ping, 10_000, 'ping after the restart');
  });

  test('SIGTERM removes exactly what the agent created', async () => {
    await agents.hz!.kill('SIGTERM');
    assert.is(ourRoutes(H), '');
    assert.is(ourRules(H), 0);
    assert.not.match(sh('ip', ['-n', H, 'link', 'show']), new RegExp(dev.hz));
    assert.match(sh('ip', ['-n', H, 'addr', 'show', 'wan0']), /203\.0\.113\.21/, 'the node\'s own network is untouched');
    const procs = sh('ps', ['-eo', 'args']).split('\n').filter((l) => l.includes(dev.hz) && !l.includes('defunct'));
    assert.equal(procs, [], 'its wireguard-go is gone');
  });
}

test.run();
