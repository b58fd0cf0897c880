/**
 * The release is what gets tested: `raven lab up --image` runs the controller Deployment and every
 * agent DaemonSet pod from the OCI archive `npm run image` builds, with runc, as the compiled
 * manifests in dist/ say (arguments, environment, user, capabilities, read-only root, mounts, memory
 * limit). Once per backend: the cluster connects; every process runs from the image's root file
 * system, in its pod's network namespace, as the user the manifest asks for, under the memory limit;
 * a failed node takes its whole pod down (the tunnel daemon too) and traffic recovers through the
 * standby; `lab down` leaves no container, cgroup or namespace behind.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { AGENT_NODE_OPTIONS } from '../../src/contract/names.ts';
import { failures } from '../../src/lab/check.ts';
import { gateways, labCheck, labDown, labFail, labRestore } from '../../src/lab/lab.ts';
import { LabState } from '../../src/lab/state.ts';
import { waitFor } from '../support/cluster-harness.ts';
import { ensureImage } from '../support/image-support.ts';
import { canUseNetns, haveStrongswan, haveWireGuard, run } from '../support/netns.ts';

const haveRunc = ['runc', 'umoci', 'socat'].every((tool) => existsSync(`/usr/bin/${tool}`) || existsSync(`/usr/sbin/${tool}`));
const raven = (args: string[]): Promise<{ code: number; out: string }> => run(process.execPath, ['bin/raven.mjs', ...args]);

/** Reads /proc of a process that may end meanwhile (a probe's ping): undefined once it is gone. */
function proc<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ESRCH') return undefined;
    throw err;
  }
}
/** The long-lived processes below `pid`, depth first (short-lived ones may be missed or skipped). */
function descendants(pid: number): number[] {
  const kids = proc(() => readdirSync(`/proc/${pid}/task`).flatMap((t) => readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number))) ?? [];
  return kids.flatMap((k) => [k, ...descendants(k)]);
}
const argv = (pid: number): string[] => proc(() => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)) ?? [];
const uid = (pid: number): number => Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
const sameInode = (a: string, b: string): boolean => statSync(a).ino === statSync(b).ino && statSync(a).dev === statSync(b).dev;
/** Like sameInode for /proc/<pid>/..., true for a process that ended meanwhile. */
const goneOrSame = (a: string, b: string): boolean => proc(() => sameInode(a, b)) ?? true;

function imageSuite(backend: 'wireguard' | 'ipsec'): void {
  const t = suite(`raven lab --image with ${backend}`);
  const runDir = mkdtempSync(join(tmpdir(), 'raven-lab-image-'));
  const name = `i${process.pid % 100000}${backend[0]}`;
  const state = new LabState(runDir, name);
  const file = `test/fixtures/lab/seed-ha-${backend}.yaml`;
  const daemon = backend === 'wireguard' ? /(^|\/)wireguard-go$/ : /(^|\/)charon$/;
  const logs = (): string => {
    const dir = join(state.dir, 'logs');
    return existsSync(dir) ? readdirSync(dir).map((f) => `--- ${f}\n${readFileSync(join(dir, f), 'utf8').split('\n').slice(-12).join('\n')}`).join('\n') : '(no logs)';
  };
  const pidOf = (what: string): number => Number(readFileSync(state.pidFile(what), 'utf8'));
  const activeOf = async (region: string): Promise<string | undefined> =>
    (await gateways(state)).find((g) => g.metadata.name === `gw-${region}`)?.status?.activeEndpoints?.find((e) => e.type === 'tunnel')?.nodeName;

  t.after(async () => {
    if (state.exists()) await labDown({ name, runDir }, { stdout: () => undefined, stderr: () => undefined });
    rmSync(runDir, { recursive: true, force: true });
  });

  t('lab up --image: every process from the image, as its manifest says, and every pod pair connects', async () => {
    const archive = await ensureImage();
    const up = await raven(['lab', 'up', file, '--name', name, '--run-dir', runDir, '--wait', '120', '--image', archive]);
    assert.is(up.code, 0, up.out + logs());
    assert.match(up.out, /every process from image [\w.-]+ \(sha256:/);
    assert.match(up.out, /every pair that should connect does/);
    const record = state.read();
    const rootfs = record.image!.rootfs;

    for (const n of record.plan.nodes) {
      const init = pidOf(`agent-${n.name}`);
      const procs = [init, ...descendants(init)];
      assert.equal(argv(init).slice(0, record.image!.config.entrypoint.length + 1), [...record.image!.config.entrypoint, 'agent'], 'the image entrypoint with the DaemonSet args');
      const agent = procs.find((p) => argv(p)[0] === '/usr/local/bin/node' && argv(p)[2] === 'agent');
      assert.ok(agent, `node ${n.name}: an agent process under its container's init (${procs.map((p) => argv(p).join(' ')).join('; ')})`);
      for (const p of procs) {
        assert.ok(goneOrSame(`/proc/${p}/root`, rootfs), `node ${n.name}: ${argv(p).join(' ')} runs from the image's root file system`);
        assert.ok(goneOrSame(`/proc/${p}/ns/net`, `/var/run/netns/${n.netns}`), `node ${n.name}: ${argv(p)[0]} in the node's network namespace`);
      }
      assert.is(uid(agent!), 0, 'the agent runs as root (runAsUser: 0)');
      const environ = readFileSync(`/proc/${agent}/environ`, 'utf8').split('\0');
      assert.ok(environ.includes(`NODE_OPTIONS=${AGENT_NODE_OPTIONS}`), `node ${n.name}: the agent runs with the DaemonSet's V8 limits`);
      const limit = readFileSync(`/sys/fs/cgroup/memory/${record.plan.prefix}-agent-${n.name}/memory.limit_in_bytes`, 'utf8').trim();
      assert.is(limit, String(256 * 1024 * 1024), 'the DaemonSet memory limit is enforced');
    }
    for (const region of record.plan.regions) {
      // The active gateway can change right after the lab connects (heartbeats settle): ask again until its pod holds the daemon.
      await waitFor(async () => {
        const active = await activeOf(region.name);
        return active && descendants(pidOf(`agent-${active}`)).some((p) => daemon.test(argv(p)[0] ?? '')) ? true : undefined;
      }, 10_000, () => `the tunnel daemon of ${region.name}'s active gateway inside its agent's pod\n${logs()}`);
    }
    const controllers = state.recorded().filter((w) => /^controller-\d+$/.test(w));
    assert.is(controllers.length, 2, 'both replicas of the Deployment');
    for (const c of controllers) {
      const node = descendants(pidOf(c)).find((p) => argv(p)[0] === '/usr/local/bin/node' && argv(p)[2] === 'controller')!;
      assert.ok(argv(node).includes('--namespace=raven-system'), '$(POD_NAMESPACE) expanded');
      assert.ok(argv(node).includes('--leader-elect'));
      assert.is(uid(node), 65532, 'the controller runs as the non-root user of its pod');
      assert.ok(sameInode(`/proc/${node}/root`, rootfs));
    }
    const results = await labCheck(state);
    assert.equal(failures(results), [], JSON.stringify(failures(results)));
  });

  t('a failed gateway takes its whole pod down, tunnel daemon included, and traffic recovers through the standby', async () => {
    const active = (await activeOf('hangzhou'))!;
    const init = pidOf(`agent-${active}`);
    const inPod = descendants(init);
    await labFail(state, active);
    for (const p of [init, ...inPod]) assert.is(argv(p).length, 0, `${p} is gone with its pod`);
    await waitFor(async () => ((await activeOf('hangzhou')) !== active ? true : undefined), 20_000, () => `a new active gateway of hangzhou\n${logs()}`);
    await waitFor(async () => (failures(await labCheck(state, { count: 1 })).length === 0 ? true : undefined), 30_000, () => `every pair through the standby\n${logs()}`);
    await labRestore(state, active);
    await waitFor(async () => (failures(await labCheck(state, { count: 1 })).length === 0 ? true : undefined), 30_000, () => `every pair after the restore\n${logs()}`);
  });

  t('lab down leaves no container, cgroup, namespace or process of the lab', async () => {
    const prefix = state.read().plan.prefix;
    const down = await raven(['lab', 'down', name, '--run-dir', runDir]);
    assert.is(down.code, 0, down.out);
    assert.not.ok(existsSync(state.dir));
    assert.equal(readdirSync('/sys/fs/cgroup/memory').filter((d) => d.startsWith(`${prefix}-`)), []);
    const netns = await run('ip', ['netns', 'list']);
    assert.not.match(netns.out, new RegExp(`${prefix}-`));
    const ours = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
      try {
        return readFileSync(`/proc/${d}/environ`, 'utf8').includes(state.dir) || readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(state.dir);
      } catch {
        return false;
      }
    });
    assert.equal(ours, []);
  });

  const ready = canUseNetns() && haveRunc && (backend === 'wireguard' ? haveWireGuard() : haveStrongswan());
  if (ready) t.run();
  else console.log(`skipped: raven lab --image with ${backend} needs root, runc, umoci, socat and the ${backend} tools`);
}

imageSuite('wireguard');
imageSuite('ipsec');
