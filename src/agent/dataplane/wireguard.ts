/**
 * WireGuard backend. The kernel module when it exists, otherwise wireguard-go (userspace), chosen
 * automatically. The private key is made once and kept in the state directory (a hostPath), so a
 * restart keeps the node's public key and its peers keep working. Peers are diffed against
 * `wg show <dev> dump`, the device against `ip -json link`: only what differs is set, and what
 * someone else removed or changed is put back by the next call with the same input.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WIREGUARD_RUN_DIR } from '../../contract/names.js';
import { hostCidr } from '../../platform/cidr.js';
import { canonicalEndpoint, canonicalSubnet, type Dropped, isWireGuardKey, shown } from '../../platform/canonical.js';
import { type CommandRunner, mustRun } from '../../platform/command-runner.js';
import { describeExit, type ExitWatch, isAlive, stopOwnedProcess, watchExit } from '../../platform/owned-process.js';
import type { PeerPlan, StagedPeer } from '../plan.js';
import { attempt } from './errors.js';

export interface WireGuardOptions {
  readonly device: string;
  readonly port: number;
  readonly mtu: number;
  readonly stateDir: string;
  readonly netns?: string;
  readonly runner: CommandRunner;
  /** Test hook: pretend the kernel has no WireGuard (this machine's kernel has none anyway). */
  readonly forceUserspace?: boolean;
  /**
   * Called once when the wireguard-go we started (or adopted) exits without our asking, with what
   * happened ("wireguard-go (pid 42) for rw0 killed by SIGKILL"). Not called for a kernel device.
   */
  readonly onExit?: (what: string) => void;
}

export interface CurrentPeer {
  readonly publicKey: string;
  readonly endpoint?: string;
  readonly allowedIPs: readonly string[];
  readonly latestHandshake: number;
  readonly keepaliveSeconds?: number;
}

/** A peer we dial (`endpoint`) whose probes have gone unanswered since `since` (epoch ms). */
export interface StaleSession {
  readonly gateway: string;
  readonly publicKey: string;
  readonly endpoint: string;
  readonly since: number;
}

/** A stale session is re-created at most this often per peer: the initiation gets a round trip and a retry. */
export const STALE_RENEW_SPACING_MS = 2000;

const USERSPACE_ENV = { WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' };

export class WireGuard {
  private readonly keyFile: string;
  private readonly pidFile: string;
  /** When we last changed each peer (epoch seconds): a handshake older than that is not an answer to the change. */
  private readonly changedAt = new Map<string, number>();
  /** When `renewStale` last looked at each peer (epoch ms). */
  private readonly staleCheckedAt = new Map<string, number>();
  /** Peers (or parts of them) refused or rejected by `wg` in the last `setPeers`. */
  refused: Dropped[] = [];
  /** The wireguard-go being watched for an exit we did not ask for. */
  private watch?: ExitWatch;

  constructor(private readonly opts: WireGuardOptions) {
    this.keyFile = join(opts.stateDir, 'wireguard.key');
    this.pidFile = join(opts.stateDir, `wireguard-go.${opts.device}.pid`);
  }

  private ns(cmd: string, args: readonly string[]): [string, string[]] {
    return this.opts.netns ? ['ip', ['netns', 'exec', this.opts.netns, cmd, ...args]] : [cmd, [...args]];
  }

  private async wg(args: readonly string[], input?: string): Promise<string> {
    const [cmd, full] = this.ns('wg', args);
    return mustRun(this.opts.runner, cmd, full, input);
  }

  private get device(): string {
    return this.opts.device;
  }

  private ip(args: readonly string[]): readonly string[] {
    return this.opts.netns ? ['-n', this.opts.netns, ...args] : args;
  }

  /** This node's public key; the private key is created on first use and kept (0600). */
  async publicKey(): Promise<string> {
    if (!existsSync(this.keyFile)) {
      await attempt(`create the WireGuard key in ${this.keyFile}`, async () => {
        mkdirSync(this.opts.stateDir, { recursive: true, mode: 0o700 });
        const key = (await mustRun(this.opts.runner, 'wg', ['genkey'])).trim();
        writeFileSync(this.keyFile, key + '\n', { mode: 0o600, flag: 'wx' });
      });
    }
    return attempt(`derive the public key from ${this.keyFile}`, async () => (await mustRun(this.opts.runner, 'wg', ['pubkey'], readFileSync(this.keyFile, 'utf8'))).trim());
  }

  /** Whether the device exists now. */
  async exists(): Promise<boolean> {
    return (await this.link()) !== undefined;
  }

  /** The device as the kernel has it now, or undefined when there is none. */
  private async link(): Promise<{ mtu?: number; flags?: string[] } | undefined> {
    const r = await this.opts.runner.run('ip', this.ip(['-json', 'link', 'show', 'dev', this.device]));
    if (r.code !== 0) return undefined;
    try {
      return (JSON.parse(r.stdout || '[]') as { mtu?: number; flags?: string[] }[])[0] ?? {};
    } catch {
      return {};
    }
  }

  /**
   * Why the backend is not up, or null: the device must exist and, when we started wireguard-go for
   * it, that process must still run. Reads the kernel and /proc, nothing cached.
   */
  async problem(): Promise<string | null> {
    if (!(await this.exists())) return `device ${this.device} does not exist`;
    const pid = this.recordedPid();
    if (pid !== undefined && !isOurWireguardGo(pid, this.device)) return `wireguard-go (pid ${pid}) for ${this.device} is not running`;
    return null;
  }

  private recordedPid(): number | undefined {
    if (!existsSync(this.pidFile)) return undefined;
    const pid = Number(readFileSync(this.pidFile, 'utf8'));
    return pid > 0 ? pid : undefined;
  }

  /**
   * Creates (or adopts, after a restart) the device, with our key, port and MTU, up; on an existing
   * device only what differs is set. Returns the mode used ('existing' when it was there already).
   */
  async up(): Promise<'kernel' | 'userspace' | 'existing'> {
    await this.publicKey();
    let mode: 'kernel' | 'userspace' | 'existing' = 'existing';
    let link = await this.link();
    if (!link) {
      const kernel = !this.opts.forceUserspace && (await this.opts.runner.run('ip', this.ip(['link', 'add', 'dev', this.device, 'type', 'wireguard']))).code === 0;
      if (kernel) mode = 'kernel';
      else {
        await this.startUserspace();
        mode = 'userspace';
      }
      link = {};
    } else this.adopt();
    const key = readFileSync(this.keyFile, 'utf8').trim();
    const [privateKey, , port] = mode === 'existing' ? ((await this.dump())[0] ?? '').split('\t') : [];
    if (privateKey !== key || port !== String(this.opts.port)) {
      await attempt(`configure the key and port ${this.opts.port} of device ${this.device}`, () => this.wg(['set', this.device, 'private-key', this.keyFile, 'listen-port', String(this.opts.port)]));
    }
    if (link.mtu !== this.opts.mtu || !link.flags?.includes('UP')) {
      await attempt(`bring up device ${this.device} with MTU ${this.opts.mtu}`, () => mustRun(this.opts.runner, 'ip', this.ip(['link', 'set', 'dev', this.device, 'mtu', String(this.opts.mtu), 'up'])));
    }
    return mode;
  }

  /** `wg show <dev> dump`: the interface line, then one line per peer. */
  private async dump(): Promise<string[]> {
    return (await attempt(`read the WireGuard state of ${this.device}`, () => this.wg(['show', this.device, 'dump']))).trim().split('\n');
  }

  /** Watches a wireguard-go an earlier agent started (not our child: by its PID in /proc). */
  private adopt(): void {
    const pid = this.recordedPid();
    if (pid === undefined || this.watch?.pid === pid || !isOurWireguardGo(pid, this.device)) return;
    this.watchProcess(watchExit({ pid, isOurs: () => isOurWireguardGo(pid, this.device) }, (e) => this.exited(e)));
  }

  private watchProcess(w: ExitWatch): void {
    this.watch?.stop();
    this.watch = w;
  }

  private exited(e: { pid: number; code?: number; signal?: NodeJS.Signals }): void {
    if (this.watch?.pid === e.pid) this.watch = undefined;
    this.opts.onExit?.(`wireguard-go (pid ${e.pid}) for ${this.device} ${describeExit(e)}`);
  }

  private async startUserspace(): Promise<void> {
    // The UAPI socket (/var/run/wireguard/<dev>.sock) is global, not per netns: a stale one from a
    // killed wireguard-go would make the new one fail, and it is ours (the device name is ours).
    rmSync(`${WIREGUARD_RUN_DIR}/${this.device}.sock`, { force: true });
    const [cmd, args] = this.ns('wireguard-go', ['-f', this.device]);
    // Detached: the device must outlive an agent restart; the PID file lets the next agent stop it.
    const child = spawn(cmd, args, { detached: true, stdio: 'ignore', env: { ...process.env, ...USERSPACE_ENV } });
    child.on('error', () => undefined);
    child.unref();
    writeFileSync(this.pidFile, String(child.pid));
    const deadline = Date.now() + 3000;
    while (!(await this.exists())) {
      if (Date.now() > deadline) throw new Error(`failed to start wireguard-go for ${this.device}: device did not appear within 3 s`);
      await new Promise((r) => setTimeout(r, 5));
    }
    // Only a start that worked is watched: one that failed is the sync's to retry, with backoff.
    this.watchProcess(watchExit({ child }, (e) => this.exited(e)));
  }

  async peers(): Promise<CurrentPeer[]> {
    const lines = (await this.dump()).slice(1).filter(Boolean);
    return lines.map((line) => {
      const [publicKey, , endpoint, allowed, handshake, , , keepalive] = line.split('\t');
      return {
        publicKey: publicKey!,
        ...(endpoint && endpoint !== '(none)' && { endpoint }),
        allowedIPs: allowed && allowed !== '(none)' ? allowed.split(',').sort() : [],
        latestHandshake: Number(handshake),
        ...(keepalive && keepalive !== 'off' && { keepaliveSeconds: Number(keepalive) }),
      };
    });
  }

  /**
   * Makes the device's peers exactly `desired` plus `staged` (those with a public key: a peer that
   * has not published one yet is skipped). Learned endpoints of peers that dial us are left alone.
   * Staged peers (remote standbys) get only their probe address as allowed IP (none without one):
   * they make their first handshake acceptable, so a failover does not wait for WireGuard's 5 s
   * retry, and their warm probes are answered through their own session. Those with an endpoint
   * are dialled too, so a session with them exists before they take over. Peers with
   * `initiateDelayMs` are set after that delay, so the two sides of an edge-to-edge pair do not
   * initiate at the same moment (only when one of them differs). Returns the gateways whose peers
   * were set, those of staged peers set, and removed keys.
   */
  async setPeers(desired: readonly PeerPlan[], staged: readonly StagedPeer[] = []): Promise<{ set: string[]; staged: string[]; removed: string[] }> {
    const refused: Dropped[] = [];
    this.refused = refused;
    const current = new Map((await this.peers()).map((p) => [p.publicKey, p]));
    const wanted = desired.filter((p) => !!p.publicKey).flatMap((p) => wellFormed(p, refused));
    const activeKeys = new Set(wanted.map((p) => p.publicKey));
    const standby = staged.filter((p) => !activeKeys.has(p.publicKey)).flatMap((p) => wellFormed({ ...p, allowedIPs: p.probeIP ? [hostCidr(p.probeIP)] : [] }, refused));
    const set: string[] = [];
    // One peer `wg` rejects must not keep the others from being set: each is its own call.
    const setPeer = async (p: { gateway: string; publicKey: string }, args: string[]): Promise<boolean> => {
      try {
        await this.wg(args);
        return true;
      } catch (err) {
        refused.push({ source: p.gateway, kind: 'peer', reason: `wg rejected peer ${p.publicKey}: ${(err as Error).message.split('\n')[0]}` });
        return false;
      }
    };
    const apply = async (p: PeerPlan & { publicKey: string }): Promise<void> => {
      const allowed = [...p.allowedIPs].sort();
      if (sameConfig(current.get(p.publicKey), allowed, p.keepaliveSeconds, p.endpoint)) return;
      if (!(await setPeer(p, peerArgs(this.device, p.publicKey, allowed, p.keepaliveSeconds, p.endpoint)))) return;
      this.changedAt.set(p.publicKey, Date.now() / 1000);
      set.push(p.gateway);
    };
    for (const p of wanted.filter((x) => !x.initiateDelayMs)) await apply(p);
    const stagedSet: string[] = [];
    for (const p of standby) {
      if (sameConfig(current.get(p.publicKey), p.allowedIPs, p.keepaliveSeconds, p.endpoint)) continue;
      if (await setPeer(p, peerArgs(this.device, p.publicKey, p.allowedIPs, p.keepaliveSeconds, p.endpoint))) stagedSet.push(p.gateway);
    }
    const delayed = wanted.filter((x) => x.initiateDelayMs && !sameConfig(current.get(x.publicKey), [...x.allowedIPs].sort(), x.keepaliveSeconds, x.endpoint));
    if (delayed.length) {
      await new Promise((r) => setTimeout(r, Math.max(...delayed.map((x) => x.initiateDelayMs!))));
      for (const p of delayed) await apply(p);
    }
    const keep = new Set([...activeKeys, ...standby.map((p) => p.publicKey)]);
    const removed: string[] = [];
    for (const key of current.keys()) {
      if (keep.has(key)) continue;
      await attempt(`remove peer ${key} from ${this.device}`, () => this.wg(['set', this.device, 'peer', key, 'remove']));
      removed.push(key);
      this.changedAt.delete(key);
      this.staleCheckedAt.delete(key);
    }
    return { set, staged: stagedSet, removed };
  }

  /**
   * Re-creates peers we dial that have not completed a handshake since we last changed them.
   * WireGuard retries an unanswered initiation only after 5 s (REKEY_TIMEOUT), and a first
   * initiation is lost whenever it reaches a gateway that has not learned our key yet (one that
   * became active a moment ago). Worse, a peer that was staged and had a session with that node
   * before (it was active earlier) still holds the old session's keys and sends data on them to a
   * gateway that restarted and knows none: nothing is answered until that session ages out. A
   * re-created peer forgets its keys and initiates at once. Returns the gateways nudged.
   */
  async nudge(desired: readonly PeerPlan[]): Promise<string[]> {
    const current = new Map((await this.peers()).map((p) => [p.publicKey, p]));
    const nudged: string[] = [];
    for (const p of desired) {
      const have = p.publicKey ? current.get(p.publicKey) : undefined;
      if (!have || !p.endpoint || (have.latestHandshake > 0 && have.latestHandshake >= Math.floor(this.changedAt.get(p.publicKey!) ?? 0))) continue;
      await attempt(`re-create peer ${p.publicKey} (${p.gateway}) on ${this.device}`, async () => {
        await this.wg(['set', this.device, 'peer', p.publicKey!, 'remove']);
        await this.wg(peerArgs(this.device, p.publicKey!, [...p.allowedIPs].sort(), p.keepaliveSeconds, p.endpoint));
      });
      nudged.push(p.gateway);
    }
    return nudged;
  }

  /**
   * Re-creates peers we dial whose session may be stale: unanswered since `since` (epoch ms) with no
   * handshake completed since. A gateway whose wireguard-go restarted knows none of the keys of the
   * sessions its peers hold; they keep sending on them, unanswered, until WireGuard gives up on a
   * session that receives nothing (15 s: KEEPALIVE_TIMEOUT + REKEY_TIMEOUT). A re-created peer
   * initiates with its next packet. Each peer at most once per `STALE_RENEW_SPACING_MS`, so a peer
   * that is really gone costs two `wg` calls that often. Returns the gateways renewed.
   */
  async renewStale(stale: readonly StaleSession[]): Promise<string[]> {
    const now = Date.now();
    // Spacing first: the agent asks every probe round, and reading the peers is a process.
    const due = stale.filter((s) => now - (this.staleCheckedAt.get(s.publicKey) ?? 0) >= STALE_RENEW_SPACING_MS);
    if (!due.length) return [];
    for (const s of due) this.staleCheckedAt.set(s.publicKey, now);
    const current = new Map((await this.peers()).map((p) => [p.publicKey, p]));
    const renewed: string[] = [];
    for (const s of due) {
      const have = current.get(s.publicKey);
      // A session made after the loss began is not stale (the peer is gone, or the path is).
      if (!have || have.latestHandshake * 1000 >= s.since) continue;
      await attempt(`re-create peer ${s.publicKey} (${s.gateway}) on ${this.device}`, async () => {
        await this.wg(['set', this.device, 'peer', s.publicKey, 'remove']);
        await this.wg(peerArgs(this.device, s.publicKey, [...have.allowedIPs].sort(), have.keepaliveSeconds, s.endpoint));
      });
      this.changedAt.set(s.publicKey, now / 1000);
      renewed.push(s.gateway);
    }
    return renewed;
  }

  /** Stops watching the daemon, which keeps running (the next agent adopts it by its recorded PID). */
  release(): void {
    this.watch?.stop();
    this.watch = undefined;
  }

  /** Removes the device and stops the wireguard-go we started (by its recorded PID only). */
  async cleanUp(): Promise<void> {
    // Stopping it is ours to do, not an exit to report.
    this.watch?.stop();
    this.watch = undefined;
    await this.opts.runner.run('ip', this.ip(['link', 'del', 'dev', this.device]));
    if (existsSync(this.pidFile)) {
      const pid = Number(readFileSync(this.pidFile, 'utf8'));
      // Under traffic wireguard-go can take over a second to exit: wait, then insist (same PID only).
      if (pid > 0) await stopOwnedProcess(pid, () => isOurWireguardGo(pid, this.device), 2000);
      rmSync(this.pidFile, { force: true });
    }
    rmSync(`${WIREGUARD_RUN_DIR}/${this.device}.sock`, { force: true });
  }
}

/**
 * The peer with only values `wg` may be given: a key of the right form, an `ip:port` endpoint in
 * canonical form, ranges that parse, a keepalive in range. A peer with a bad key or endpoint is
 * refused as a whole; a bad range is left out on its own. The plan parses all of these already;
 * this is the executor's own check, so no caller can hand `wg` something it did not validate.
 */
function wellFormed<P extends { gateway: string; publicKey?: string; endpoint?: string; allowedIPs: readonly string[]; keepaliveSeconds?: number }>(p: P, refused: Dropped[]): (P & { publicKey: string })[] {
  const refuse = (reason: string): [] => (refused.push({ source: p.gateway, kind: 'peer', reason }), []);
  if (!isWireGuardKey(p.publicKey)) return refuse(`public key ${shown(p.publicKey, 60)} is not a WireGuard key`);
  if (p.endpoint !== undefined && !canonicalEndpoint(p.endpoint).ok) return refuse(`endpoint ${shown(p.endpoint)} is not ip:port`);
  if (p.keepaliveSeconds !== undefined && !(Number.isInteger(p.keepaliveSeconds) && p.keepaliveSeconds >= 1 && p.keepaliveSeconds <= 65535)) return refuse(`keepalive ${shown(p.keepaliveSeconds)} is out of range`);
  const allowedIPs = p.allowedIPs.filter((a) => {
    const c = canonicalSubnet(a);
    if (c.ok && c.value === a) return true;
    refused.push({ source: p.gateway, kind: 'peer', reason: `allowed IP ${shown(a)} left out: ${c.ok ? 'not in canonical form' : c.reason}` });
    return false;
  });
  return [{ ...p, publicKey: p.publicKey, allowedIPs }];
}


function sameConfig(have: CurrentPeer | undefined, allowed: readonly string[], keepalive: number | undefined, endpoint: string | undefined): boolean {
  return !!have && have.allowedIPs.join(',') === allowed.join(',') && (have.keepaliveSeconds ?? 0) === (keepalive ?? 0) && (!endpoint || have.endpoint === endpoint);
}

function peerArgs(device: string, key: string, allowed: readonly string[], keepalive: number | undefined, endpoint: string | undefined): string[] {
  return ['set', device, 'peer', key, ...(endpoint ? ['endpoint', endpoint] : []), 'persistent-keepalive', keepalive ? String(keepalive) : 'off', 'allowed-ips', allowed.join(',')];
}

/** Guards against PID reuse: only a live wireguard-go for this device is ours to stop. */
function isOurWireguardGo(pid: number, device: string): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return isAlive(pid) && argv.some((a) => a.endsWith('wireguard-go')) && argv.includes(device);
  } catch {
    return false;
  }
}
