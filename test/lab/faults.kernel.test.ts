/**
 * `raven lab fail --what ...` and `--api`, on one real WireGuard lab (the seed scenario with a
 * standby in every region), through the CLI: each fault does what it says to the kernel and the
 * processes, `restore` undoes exactly that, and afterwards every pair that should connect does
 * again (`lab check`). A killed tunnel daemon is started again by its agent with no restore at all;
 * a paused API server leaves the data plane alone while it is paused. Outcomes are asserted, never
 * how fast they came. `lab down` then leaves nothing behind, with faults still recorded.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { HEALTH_ANNOTATION, isReached, leaseName, parseHealth } from '../../src/contract/heartbeat.ts';
import { failures } from '../../src/lab/check.ts';
import { gateways, labCheck, labDown, labRestartController, startAgent, tunnelDaemons } from '../../src/lab/lab.ts';
import { WAN_ROUTER_IP } from '../../src/lab/layout.ts';
import { UDP_BLOCK_TABLE } from '../../src/lab/network.ts';
import { LabState } from '../../src/lab/state.ts';
import { waitFor } from '../support/cluster-harness.ts';
import { canUseNetns, haveWireGuard, run } from '../support/netns.ts';

const haveNft = spawnSync('nft', ['--version']).status === 0;
const raven = (args: string[]): Promise<{ code: number; out: string }> => run(process.execPath, ['bin/raven.mjs', ...args]);

const t = suite('raven lab faults (wireguard)');
const runDir = mkdtempSync(join(tmpdir(), 'raven-lab-faults-'));
const name = `f${process.pid % 100000}`;
const state = new LabState(runDir, name);
const lab = (args: string[]): Promise<{ code: number; out: string }> => raven(['lab', ...args, '--name', name, '--run-dir', runDir]);
const node = (n: string) => state.read().plan.nodes.find((x) => x.name === n)!;
const activeOf = async (region: string): Promise<string> =>
  (await gateways(state)).find((g) => g.metadata.name === `gw-${region}`)!.status!.activeEndpoints!.find((e) => e.type === 'tunnel')!.nodeName;
const logs = (): string => {
  const dir = join(state.dir, 'logs');
  return existsSync(dir) ? readdirSync(dir).map((f) => `--- ${f}\n${readFileSync(join(dir, f), 'utf8').split('\n').slice(-12).join('\n')}`).join('\n') : '(no logs)';
};
/** Until one check round (one ping per pair) passes: the lab has recovered. */
const recovers = async (what: string, ms = 45_000): Promise<void> => {
  let last = '';
  await waitFor(async () => {
    const bad = failures(await labCheck(state, { count: 1 }));
    last = bad.map((b) => `${b.kind} ${b.from} -> ${b.to}`).join(', ');
    return bad.length === 0;
  }, ms, () => `every pair to connect ${what} (still failing: ${last})\n${logs()}`);
};
const controllerLog = (): string => readFileSync(state.log('controller'), 'utf8');
/** The Events recorded on a Gateway (the controller records them in the default namespace). */
const eventsOf = async (gateway: string): Promise<{ reason?: string; message?: string }[]> => {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(state.kubeconfig);
  return (await kc.makeApiClient(k8s.CoreV1Api).listNamespacedEvent({ namespace: 'default' })).items.filter((e) => e.involvedObject?.name === gateway);
};
/** A node's heartbeat Lease, as the controller reads it. */
const lease = async (node: string): Promise<k8s.V1Lease> => {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(state.kubeconfig);
  return kc.makeApiClient(k8s.CoordinationV1Api).readNamespacedLease({ name: leaseName(node), namespace: state.read().namespace });
};
/** The cloud's other gateway candidate (the fixture has two). */
const otherCloud = (node: string): string => (node === 'cloud-gw-1' ? 'cloud-gw-2' : 'cloud-gw-1');
const link = (netns: string, dev: string): { operstate?: string; flags?: string[] } => JSON.parse(spawnSync('ip', ['-n', netns, '-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' }).stdout || '[{}]')[0];
/** 'UP' or 'DOWN' as set (a delay line's TAP reports operstate UNKNOWN when up). */
const linkState = (netns: string, dev: string): string => (link(netns, dev).flags?.includes('UP') ? 'UP' : 'DOWN');
const procState = (pid: number): string | undefined => {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
  } catch {
    return undefined;
  }
};

/**
 * Injects a fault, runs `during`, and restores it whatever `during` did (so one failed assertion
 * does not leave the lab broken for the next test); returns restore's output.
 */
async function withFault(fail: string[], restore: string[], during: (out: string) => Promise<void> | void): Promise<string> {
  const f = await lab(['fail', ...fail]);
  assert.is(f.code, 0, f.out);
  let failed: unknown;
  try {
    await during(f.out);
  } catch (err) {
    failed = err;
  }
  const r = await lab(['restore', ...restore]);
  if (failed) throw failed;
  assert.is(r.code, 0, r.out);
  return r.out;
}

t.after(async () => {
  if (state.exists()) await labDown({ name, runDir }, { stdout: () => undefined, stderr: () => undefined });
  rmSync(runDir, { recursive: true, force: true });
});

t('lab up: every pair connects', async () => {
  const up = await raven(['lab', 'up', 'test/fixtures/lab/seed-ha-wireguard.yaml', '--name', name, '--run-dir', runDir, '--wait', '120']);
  assert.is(up.code, 0, up.out + logs());
});

t('--what tunnel on an active gateway: only its wireguard-go dies, its agent notices, starts it again and traffic recovers', async () => {
  const gw = node(await activeOf('hangzhou'));
  const before = tunnelDaemons(gw);
  assert.is(before.length, 1, 'one wireguard-go');
  const agentPid = state.livePid(`agent-${gw.name}`);
  const fail = await lab(['fail', gw.name, '--what', 'tunnel']);
  assert.is(fail.code, 0, fail.out);
  assert.match(fail.out, new RegExp(`node ${gw.name}: tunnel daemon killed \\(wireguard-go ${before[0]!.pid}\\); its agent is left running`));
  assert.is(state.livePid(`agent-${gw.name}`), agentPid, 'the agent was not touched');
  await waitFor(() => tunnelDaemons(gw).some((d) => d.pid !== before[0]!.pid), 20_000, () => `the agent to start wireguard-go again\n${logs()}`);
  await recovers('after the tunnel daemon was killed');
  const agentLog = readFileSync(state.log(`agent-${gw.name}`), 'utf8');
  assert.match(agentLog, new RegExp(`tunnel backend exited.*wireguard-go \\(pid ${before[0]!.pid}\\) for ${gw.device} killed by SIGKILL`));
  assert.match(agentLog, /tunnel backend restored/);
  const restore = await lab(['restore', gw.name]);
  assert.is(restore.code, 0, restore.out);
  assert.match(restore.out, /nothing to undo: its agent restarts the daemon itself \(running now: wireguard-go \d+\)/);
  assert.equal(state.nodeFaults(), []);
});

t('--what tunnel on the cloud standby: the edges, whose sessions with its old daemon are dead, renew them at once and report it reached again', async () => {
  const standby = node(otherCloud(await activeOf('cloud')));
  const edges = [await activeOf('hangzhou'), await activeOf('qingdao')];
  const before = tunnelDaemons(standby);
  const fail = await lab(['fail', standby.name, '--what', 'tunnel']);
  assert.is(fail.code, 0, fail.out);
  await waitFor(() => tunnelDaemons(standby).some((d) => d.pid !== before[0]!.pid), 20_000, () => `the agent to start wireguard-go again\n${logs()}`);
  // The edges keep sending on sessions the new daemon has no keys for; WireGuard alone starts a new
  // one only after 15 s without an answer. This is the standby a data-path failover needs reached.
  for (const edge of edges) {
    await waitFor(() => /renewed silent tunnel sessions peers=gw-cloud/.test(readFileSync(state.log(`agent-${edge}`), 'utf8')), 10_000, () => `${edge} to renew its session with ${standby.name}\n${logs()}`);
    await waitFor(async () => isReached(parseHealth((await lease(edge)).metadata?.annotations?.[HEALTH_ANNOTATION])?.peers['gw-cloud']?.standbys?.[standby.name]), 10_000, () => `${edge} to report ${standby.name} reached\n${logs()}`);
  }
  const restore = await lab(['restore', standby.name]);
  assert.is(restore.code, 0, restore.out);
});

t('--what udp-block on the active cloud gateway: nftables drops its tunnel port; the edges lose it, reach the standby, and the cloud fails over to it', async () => {
  const gw = node(await activeOf('cloud'));
  const standby = otherCloud(gw.name);
  const port = Number(readFileSync(join(state.nodeDir(gw.name), 'config', 'vpn-port'), 'utf8'));
  const table = (): number | null => spawnSync('ip', ['netns', 'exec', gw.netns, 'nft', 'list', 'table', 'inet', UDP_BLOCK_TABLE], { encoding: 'utf8' }).status;
  // The edges' tunnel packets (keepalives, probes, handshakes) reach it and are dropped.
  const dropped = (): number => {
    const out = spawnSync('ip', ['netns', 'exec', gw.netns, 'nft', '-j', 'list', 'table', 'inet', UDP_BLOCK_TABLE], { encoding: 'utf8' }).stdout;
    return (JSON.parse(out).nftables as { rule?: { expr: { counter?: { packets: number } }[] } }[]).flatMap((x) => x.rule?.expr ?? []).reduce((sum, e) => sum + (e.counter?.packets ?? 0), 0);
  };
  const before = { hangzhou: await activeOf('hangzhou'), qingdao: await activeOf('qingdao') };
  const restore = await withFault([gw.name, '--what', 'udp-block'], [gw.name, '--what', 'udp-block'], async (out) => {
    assert.match(out, new RegExp(`UDP to and from port ${port} dropped`));
    assert.is(table(), 0, 'the table is in the node');
    const again = await lab(['fail', gw.name, '--what', 'udp-block']);
    assert.is(again.code, 1, 'a fault is not injected twice');
    assert.match(again.out, /is already failed with --what udp-block/);
    await waitFor(() => dropped() > 0, 15_000, 'tunnel packets to be dropped');
    // The node, its agent and its heartbeat are fine: only the data path says it is failing.
    await waitFor(async () => (await activeOf('cloud')) === standby, 30_000, () => `the cloud to fail over to ${standby}\n${logs()}`);
    await recovers(`through ${standby} while ${gw.name} is blocked`);
    assert.match(controllerLog(), new RegExp(`failed over for data-path evidence gateway=gw-cloud from=${gw.name} to=${standby} evidence="2/2 remote regions lost gw-cloud via ${gw.name} for \\d+ ms or more \\(gw-hangzhou, gw-qingdao\\); 2/2 reach standby ${standby}"`));
    const lost = async (): Promise<boolean> => (await eventsOf('gw-cloud')).some((e) => e.reason === 'ActiveEndpointLost' && !!e.message?.includes(`${gw.name} of gw-cloud lost: 2/2 remote regions lost`));
    await waitFor(lost, 10_000, 'an ActiveEndpointLost Event with the evidence');
    assert.equal({ hangzhou: await activeOf('hangzhou'), qingdao: await activeOf('qingdao') }, before, 'the edges, which lost only the cloud, keep their gateways');
  });
  assert.match(restore, new RegExp(`restored \\(UDP port ${port} open again\\)`));
  assert.is.not(table(), 0, 'the table is gone');
  await recovers('after the UDP block was lifted');
  assert.is(await activeOf('cloud'), standby, 'no fail-back: the new gateway is as good');
});

t('--what wan on the active cloud gateway: its uplink goes down until restore; the cloud fails over to the standby (after the hold-down of the last data-path failover)', async () => {
  const gw = node(await activeOf('cloud'));
  const standby = otherCloud(gw.name);
  const sw = state.read().plan.switchNetns;
  await withFault([gw.name, '--what', 'wan'], [gw.name], async (out) => {
    assert.match(out, new RegExp(`WAN cut: its uplink \\(${gw.wanPort}\\) is down`));
    assert.is(linkState(sw, gw.wanPort!), 'DOWN');
    // wan0 is a delay line's TAP here (the lab's default WAN delay): it keeps its carrier, but
    // nothing gets through, as with a cut behind the first hop.
    assert.ok(link(gw.netns, 'wan0').flags?.includes('UP'), 'the node\'s own link stays up');
    assert.is.not(spawnSync('ip', ['netns', 'exec', gw.netns, 'ping', '-c', '1', '-W', '1', WAN_ROUTER_IP]).status, 0, 'the router is unreachable');
    // The udp-block test failed the cloud over moments ago: this one waits out DATAPATH_HOLD_DOWN_MS (10 s).
    await waitFor(async () => (await activeOf('cloud')) === standby, 60_000, () => `the cloud to fail over to ${standby}\n${logs()}`);
    await recovers(`through ${standby} while ${gw.name}'s uplink is down`);
  });
  assert.is(linkState(sw, gw.wanPort!), 'UP');
  assert.match(spawnSync('ip', ['-n', sw, 'route', 'show', `${gw.publicIP}/32`], { encoding: 'utf8' }).stdout, new RegExp(`dev ${gw.wanPort}`), 'the router reaches it again');
  await recovers('after the uplink came back');
});

t('--what wan on a NATed node cuts its region\'s router uplink, shared by the region: no standby is better, so no gateway changes (held, with an Event)', async () => {
  const region = state.read().plan.regions.find((r) => r.name === 'qingdao')!;
  const before = { cloud: await activeOf('cloud'), hangzhou: await activeOf('hangzhou'), qingdao: await activeOf('qingdao') };
  const heldBefore = (controllerLog().match(/held back a failover gateway=gw-qingdao/g) ?? []).length;
  await withFault(['qd-1', '--what', 'wan'], ['qd-1', '--what', 'wan'], async (out) => {
    assert.match(out, new RegExp(`WAN cut: region qingdao's NAT router uplink \\(${region.nat!.wanPort}\\) is down, for every node of the region`));
    const second = await lab(['fail', 'qd-2', '--what', 'wan']);
    assert.is(second.code, 1, 'the region shares it');
    assert.match(second.out, /already down \(fail qd-1 --what wan\)/);
    assert.is(linkState(state.read().plan.switchNetns, region.nat!.wanPort), 'DOWN');
    // The cloud lost qingdao's active and cannot reach its standby either: the decision is to hold.
    await waitFor(() => (controllerLog().match(/held back a failover gateway=gw-qingdao/g) ?? []).length > heldBefore, 20_000, () => `the controller to weigh and hold qingdao's failover\n${logs()}`);
    assert.match(controllerLog(), new RegExp(`held back a failover gateway=gw-qingdao node=${before.qingdao} type=tunnel reason="data path: 1/1 remote regions lost gw-qingdao via ${before.qingdao} for \\d+ ms or more \\(gw-cloud\\); no standby is reached by more than 0/1; not failed over: no standby is known to be better"`));
    await waitFor(async () => (await eventsOf('gw-qingdao')).some((e) => e.reason === 'FailoverHeld'), 10_000, 'a FailoverHeld Event on the Gateway');
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal({ cloud: await activeOf('cloud'), hangzhou: await activeOf('hangzhou'), qingdao: await activeOf('qingdao') }, before, 'no region changed gateways: qingdao\'s cut is qingdao\'s alone, and hits both its candidates');
  });
  assert.is(linkState(state.read().plan.switchNetns, region.nat!.wanPort), 'UP');
  await recovers('after the NAT uplink came back');
  assert.equal({ cloud: await activeOf('cloud'), hangzhou: await activeOf('hangzhou'), qingdao: await activeOf('qingdao') }, before, 'nor after it');
});

t('a rolling restart of every agent (SIGTERM, one node at a time, as a DaemonSet update) moves no gateway and keeps every tunnel daemon', async () => {
  const actives = async (): Promise<string[]> => Promise.all(['cloud', 'hangzhou', 'qingdao'].map(activeOf));
  const before = await actives();
  const electedBefore = (controllerLog().match(/elected active tunnel endpoint/g) ?? []).length;
  const rec = state.read();
  const daemons = Object.fromEntries(before.map((n) => [n, tunnelDaemons(node(n)).map((d) => d.pid)]));
  for (const n of rec.plan.nodes) {
    const log = state.log(`agent-${n.name}`);
    const served = (readFileSync(log, 'utf8').match(/serving health/g) ?? []).length;
    await state.stop(`agent-${n.name}`, 5000);
    await startAgent(state, rec, n);
    await waitFor(() => (readFileSync(log, 'utf8').match(/serving health/g) ?? []).length > served, 20_000, () => `the new agent of ${n.name} to serve\n${logs()}`);
  }
  await recovers('after the rolling restart');
  assert.equal(await actives(), before, 'the same gateways');
  assert.is((controllerLog().match(/elected active tunnel endpoint/g) ?? []).length, electedBefore, 'no election at all');
  for (const n of before) assert.equal(tunnelDaemons(node(n)).map((d) => d.pid), daemons[n], `${n}: its wireguard-go was adopted, not restarted`);
});

t('a controller restart moves no gateway', async () => {
  const before = await Promise.all(['cloud', 'hangzhou', 'qingdao'].map(activeOf));
  const electedBefore = (controllerLog().match(/elected active tunnel endpoint/g) ?? []).length;
  const synced = (): number => (controllerLog().match(/caches synced; reconciling/g) ?? []).length;
  const syncedBefore = synced();
  await labRestartController(state);
  await waitFor(() => synced() > syncedBefore, 20_000, () => `the new controller to sync\n${logs()}`);
  await new Promise((r) => setTimeout(r, 4000));
  assert.equal(await Promise.all(['cloud', 'hangzhou', 'qingdao'].map(activeOf)), before);
  assert.is((controllerLog().match(/elected active tunnel endpoint/g) ?? []).length, electedBefore);
  await recovers('after the controller restart');
});

t('--api 10s pauses the API server; the data plane does not notice, and all is well after it resumes', async () => {
  const supervisor = state.livePid('supervisor')!;
  const fail = await lab(['fail', '--api', '10s']);
  assert.is(fail.code, 0, fail.out);
  try {
    assert.match(fail.out, new RegExp(`API paused for 10 s \\(control plane pid ${supervisor} stopped\\)`));
    assert.is(procState(supervisor), 'T', 'stopped');
    const during = await labCheck(state, { count: 3 });
    assert.equal(failures(during), [], 'every pair connects while the API is paused');
    assert.is(procState(supervisor), 'T', 'still paused after the check');
    await waitFor(() => procState(supervisor) !== 'T' && !state.apiFault(), 20_000, 'the pause to end by itself');
  } finally {
    if (state.apiFault()) await lab(['restore', '--api']);
  }
  await recovers('after the API came back');
  const noPause = await lab(['restore', '--api']);
  assert.is(noPause.code, 1);
  assert.match(noPause.out, /is not paused/);
});

t('restore --api ends a pause early; lab down cleans up a lab with faults still injected', async () => {
  const supervisor = state.livePid('supervisor')!;
  assert.is((await lab(['fail', '--api', '60s'])).code, 0);
  assert.is(procState(supervisor), 'T');
  const restore = await lab(['restore', '--api']);
  assert.is(restore.code, 0, restore.out);
  assert.match(restore.out, new RegExp(`API resumed \\(control plane pid ${supervisor}\\)`));
  assert.is.not(procState(supervisor), 'T');
  assert.not.ok(state.livePid('api-resume'), 'the helper waiting to resume it is gone');

  const rec = state.read();
  assert.is((await lab(['fail', 'cloud-gw-2', '--what', 'udp-block'])).code, 0);
  assert.is((await lab(['fail', 'hz-3', '--what', 'agent'])).code, 0);
  assert.is((await lab(['fail', '--api', '60s'])).code, 0);
  const down = await raven(['lab', 'down', name, '--run-dir', runDir]);
  assert.is(down.code, 0, down.out);
  assert.equal(spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.startsWith(`${rec.plan.prefix}-`)), []);
  const procs = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
    try {
      return readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(state.dir) || readFileSync(`/proc/${d}/environ`, 'utf8').includes(state.dir);
    } catch {
      return false;
    }
  });
  assert.equal(procs, [], 'no process of the lab is left, the paused one included');
  // Gone, or a zombie until whoever adopted it when `lab up` exited reaps it.
  assert.ok(procState(supervisor) === undefined || procState(supervisor) === 'Z', 'the paused control plane was resumed and stopped');
  assert.not.ok(existsSync(state.dir));
});

if (!canUseNetns() || !haveNft || !haveWireGuard()) console.warn('needs root, nftables, wireguard-tools and wireguard-go: lab fault tests not run');
else t.run();
