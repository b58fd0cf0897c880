/**
 * IPsec backend: one strongSwan charon per node, configured through swanctl over its own vici
 * socket. Kernel ESP when the kernel has it; otherwise kernel-libipsec (userspace ESP over a TUN
 * device, `ipsec0`, always UDP-encapsulated), chosen automatically by trying to add an ESP state.
 *
 * Isolation: charon's pidfile (/run/charon.pid) is not configurable, so charon runs in a private
 * mount namespace with its own tmpfs on /run; its config, vici socket and log live in the state
 * directory. It is started detached, so the data plane outlives an agent crash; the PID is recorded
 * and only that process (checked against /proc/<pid>/cmdline and its STRONGSWAN_CONF) is signalled.
 * Nothing here flushes xfrm state or restarts a system IPsec service: charon removes what it
 * installed when it stops.
 *
 * Routing: charon itself routes each peer's remote subnets into the tunnel, in table 220 behind a
 * rule of priority 220 (`routeTable`), with a source address from the local subnets. With
 * kernel-libipsec (strongSwan 5.9) that route is not optional: a CHILD_SA whose local subnet holds
 * no address of this host fails ("error installing route with policy"), so a gateway must own an
 * address in every local subnet it protects.
 *
 * The PSK is never on a command line and never logged: it is written (hex-encoded, so no quoting
 * problem can arise) into a 0600 swanctl.conf, and charon and swanctl run with an environment that
 * holds nothing but PATH and their config paths (the agent's own environment carries the PSK).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect, isIP } from 'node:net';
import { isAbsolute, join } from 'node:path';
import { canonicalEndpoint, type Dropped, shown } from '../../platform/canonical.js';
import { type CommandRunner, mustRun } from '../../platform/command-runner.js';
import { describeExit, type ExitWatch, isAlive, type ProcessExit, stopOwnedProcess, watchExit } from '../../platform/owned-process.js';
import { IPSEC_MAX_MTU, type PeerPlan } from '../plan.js';
import { attempt } from './errors.js';

export interface IpsecOptions {
  /** This node's name (for messages; IKE identities are Gateway names, see `setPeers`). */
  readonly node: string;
  /** Where charon's config, vici socket, pidfile and log live. Must not be under /run (charon gets a private /run). */
  readonly stateDir: string;
  readonly netns?: string;
  readonly runner: CommandRunner;
  /** UDP port for IKE and (UDP-encapsulated) ESP; Raven uses 4500. */
  readonly port: number;
  /**
   * Pre-shared key, the same on every gateway. Never logged, never on a command line. Absent on
   * nodes that are no gateway candidate (they do not mount it): such a backend can only stop a
   * charon it started earlier, never configure peers.
   */
  readonly psk?: string;
  /** Test hook: use kernel-libipsec even if the kernel has ESP (this machine's kernel has none anyway). */
  readonly forceUserspace?: boolean;
  /**
   * MTU for the kernel-libipsec TUN device. strongSwan creates it with 1400 and sizes its reads by
   * that, so it can only be lowered (1280..1400).
   */
  readonly mtu?: number;
  /** Routing table (and rule priority) charon installs tunnel routes into; strongSwan's default is 220. */
  readonly routeTable?: number;
  /** Path of the charon binary (Debian: /usr/lib/ipsec/charon). */
  readonly charonPath?: string;
  /** Called once when the charon we started (or adopted) exits without our asking, with what happened. */
  readonly onExit?: (what: string) => void;
}

export type IpsecMode = 'kernel' | 'userspace';

export interface IpsecChild {
  readonly name: string;
  readonly state: string;
  readonly localTs: readonly string[];
  readonly remoteTs: readonly string[];
}

export interface IpsecSa {
  /** The remote Gateway, when the connection is one we loaded; otherwise the connection name. */
  readonly gateway: string;
  readonly connection: string;
  /** charon's unique IKE_SA id (`#n`): a new one means the SA was re-established. */
  readonly uniqueId: number;
  /** IKE_SA state, e.g. ESTABLISHED, CONNECTING. */
  readonly state: string;
  readonly remoteId?: string;
  /** `addr[port]` the peer is seen at. */
  readonly remote?: string;
  /** Seconds since the IKE_SA was established (its last rekey), when it is. */
  readonly establishedSecondsAgo?: number;
  readonly children: readonly IpsecChild[];
}

/** The TUN device kernel-libipsec creates (name fixed by strongSwan, one per network namespace). */
export const LIBIPSEC_DEVICE = 'ipsec0';
/** Its MTU as strongSwan 5.9 creates it (not configurable there); the plan caps every IPsec MTU at it. */
export const LIBIPSEC_MTU = IPSEC_MAX_MTU;
/** Only what the core plugins shipped with libstrongswan provide (no openssl, gcm or curve25519 needed). */
export const IKE_PROPOSAL = 'aes128-sha256-modp2048';
export const ESP_PROPOSAL = 'aes128-sha256';

/** Where Debian and other distributions install charon. */
export const CHARON_CANDIDATES = ['/usr/lib/ipsec/charon', '/usr/libexec/ipsec/charon', '/usr/libexec/strongswan/charon'];
/**
 * Run as `sh -c SCRIPT raven-charon <charon path>`: mounts a private /run (we are in a fresh mount
 * namespace from `unshare -m`) and becomes charon, so the PID we spawned is charon's. Constant:
 * the only variable input is a positional argument.
 */
const START_SCRIPT = 'mount -t tmpfs -o mode=0755,size=1m raven-ipsec-run /run && exec "$1"';
const CLEAN_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
/** Kubernetes object names (DNS-1123 subdomains): safe as config values and identities. */
const DNS_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const SAFE_PATH = /^\/[A-Za-z0-9._/-]*$/;

export class IpsecBackend {
  private readonly files: {
    readonly strongswanConf: string;
    readonly swanctlConf: string;
    readonly swanctlDir: string;
    readonly vici: string;
    readonly pid: string;
    readonly log: string;
  };
  private readonly table: number;
  private modeCache?: IpsecMode;
  /** The swanctl.conf last loaded into the running charon by this instance, and its connection blocks. */
  private loaded?: Rendered;
  /** The charon being watched for an exit we did not ask for. */
  private watch?: ExitWatch;

  constructor(private readonly opts: IpsecOptions) {
    if (!isAbsolute(opts.stateDir) || !SAFE_PATH.test(opts.stateDir)) throw new Error(`ipsec: state dir must be an absolute path of [A-Za-z0-9._/-], got ${JSON.stringify(opts.stateDir)}`);
    if (/^\/(var\/)?run(\/|$)/.test(opts.stateDir)) throw new Error(`ipsec: state dir ${opts.stateDir} is under /run, which charon's private /run would hide`);
    if (!validName(opts.node)) throw new Error(`ipsec: node name ${JSON.stringify(opts.node)} is not a DNS-1123 name`);
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) throw new Error(`ipsec: bad port ${opts.port}`);
    if (opts.psk !== undefined && !opts.psk) throw new Error('ipsec: empty PSK');
    this.table = opts.routeTable ?? 220;
    if (!Number.isInteger(this.table) || this.table < 1 || this.table > 0xfffffffe) throw new Error(`ipsec: bad route table ${this.table}`);
    if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 1280 || opts.mtu > LIBIPSEC_MTU)) throw new Error(`ipsec: MTU ${opts.mtu} is outside 1280..${LIBIPSEC_MTU}`);
    const d = opts.stateDir;
    this.files = {
      strongswanConf: join(d, 'strongswan.conf'),
      swanctlConf: join(d, 'swanctl.conf'),
      swanctlDir: join(d, 'swanctl'),
      vici: join(d, 'charon.vici'),
      pid: join(d, 'charon.pid'),
      log: join(d, 'charon.log'),
    };
    // sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
    if (Buffer.byteLength(this.files.vici) > 107) throw new Error(`ipsec: vici socket path ${this.files.vici} is too long for a unix socket`);
  }

  /** The tunnel device routes should point at: `ipsec0` with kernel-libipsec; none with kernel ESP (policy-based). */
  get device(): string | undefined {
    return this.modeCache === 'userspace' ? LIBIPSEC_DEVICE : undefined;
  }

  get viciUri(): string {
    return `unix://${this.files.vici}`;
  }

  /** The PID of our running charon, if there is one. */
  pid(): number | undefined {
    if (!existsSync(this.files.pid)) return undefined;
    const pid = Number(readFileSync(this.files.pid, 'utf8'));
    return pid > 0 && isOurCharon(pid, this.files.strongswanConf) ? pid : undefined;
  }

  /**
   * Why the backend is not up, or null: our charon must run and, with kernel-libipsec, its TUN
   * device must exist. Reads /proc and the kernel, nothing cached.
   */
  async problem(): Promise<string | null> {
    if (this.pid() === undefined) return `charon (pid file ${this.files.pid}) is not running`;
    if (this.device && (await this.opts.runner.run('ip', this.ip(['link', 'show', 'dev', this.device]))).code !== 0) return `device ${this.device} does not exist`;
    return null;
  }

  /**
   * Starts this node's charon, or adopts the one a previous agent started (same PID file, same
   * config). Returns the ESP mode and whether charon was started now or adopted.
   */
  async up(): Promise<{ mode: IpsecMode; started: boolean }> {
    const mode = await this.mode();
    mkdirSync(this.opts.stateDir, { recursive: true, mode: 0o700 });
    mkdirSync(this.files.swanctlDir, { recursive: true, mode: 0o700 });
    const conf = renderStrongswanConf({ vici: this.viciUri, port: this.opts.port, table: this.table, mode });
    const running = this.pid();
    const started = !(running !== undefined && readIfExists(this.files.strongswanConf) === conf && existsSync(this.files.vici));
    if (started) {
      if (running !== undefined) await this.stopCharon(running);
      writeFileSync(this.files.strongswanConf, conf, { mode: 0o644 });
      await this.startCharon();
      this.loaded = undefined;
    } else if (this.watch?.pid !== running) {
      // A charon an earlier agent started: not our child, so watched by its PID in /proc.
      const pid = running!;
      this.watchCharon(watchExit({ pid, isOurs: () => isOurCharon(pid, this.files.strongswanConf) }, (e) => this.exited(e)));
    }
    if (mode === 'userspace' && this.opts.mtu !== undefined && this.opts.mtu !== LIBIPSEC_MTU) {
      const mtu = this.opts.mtu;
      await attempt(`set the MTU of ${LIBIPSEC_DEVICE} to ${mtu}`, () => mustRun(this.opts.runner, 'ip', this.ip(['link', 'set', 'dev', LIBIPSEC_DEVICE, 'mtu', String(mtu)])));
    }
    return { mode, started };
  }

  /** Kernel ESP if an ESP state can be added (and is removed again at once); otherwise kernel-libipsec. */
  private async mode(): Promise<IpsecMode> {
    if (this.modeCache) return this.modeCache;
    if (this.opts.forceUserspace) return (this.modeCache = 'userspace');
    // A throwaway SA between TEST-NET-1 addresses with a random SPI: nobody else's state can match it.
    const spi = `0x${(0x10000000 + randomBytes(4).readUInt32BE() % 0xe0000000).toString(16)}`;
    const id = ['src', '192.0.2.1', 'dst', '192.0.2.2', 'proto', 'esp', 'spi', spi];
    const add = await this.opts.runner.run('ip', this.ip([
      'xfrm', 'state', 'add', ...id, 'mode', 'tunnel',
      'enc', 'cbc(aes)', `0x${'00'.repeat(16)}`, 'auth-trunc', 'hmac(sha256)', `0x${'00'.repeat(32)}`, '128',
    ]));
    if (add.code === 0) await this.opts.runner.run('ip', this.ip(['xfrm', 'state', 'delete', ...id]));
    return (this.modeCache = add.code === 0 ? 'kernel' : 'userspace');
  }

  private ip(args: readonly string[]): readonly string[] {
    return this.opts.netns ? ['-n', this.opts.netns, ...args] : args;
  }

  private watchCharon(w: ExitWatch): void {
    this.watch?.stop();
    this.watch = w;
  }

  private exited(e: ProcessExit): void {
    if (this.watch?.pid === e.pid) this.watch = undefined;
    this.opts.onExit?.(`charon (pid ${e.pid}) ${describeExit(e)}`);
  }

  private async startCharon(): Promise<void> {
    const charon = this.opts.charonPath ?? CHARON_CANDIDATES.find((p) => existsSync(p));
    if (!charon) throw new Error(`failed to start charon: not found (looked in ${CHARON_CANDIDATES.join(', ')}); install strongswan-charon`);
    rmSync(this.files.vici, { force: true });
    const inner = ['unshare', '-m', '--propagation', 'private', 'sh', '-c', START_SCRIPT, 'raven-charon', charon];
    const [cmd, args] = this.opts.netns ? ['ip', ['netns', 'exec', this.opts.netns, ...inner]] : [inner[0]!, inner.slice(1)];
    const log = openSync(this.files.log, 'w', 0o600);
    let pid: number | undefined;
    let child: ChildProcess | undefined;
    try {
      // Detached: the tunnel must outlive an agent restart; the PID file lets the next agent adopt or stop it.
      // `ip netns exec`, `unshare` and `sh -c '... && exec'` all exec in place: the PID is charon's.
      child = spawn(cmd, args, { detached: true, stdio: ['ignore', log, log], env: { PATH: CLEAN_PATH, STRONGSWAN_CONF: this.files.strongswanConf } });
      child.on('error', () => undefined);
      child.unref();
      pid = child.pid;
    } finally {
      closeSync(log);
    }
    if (!pid) throw new Error(`failed to start charon: ${cmd} did not start`);
    writeFileSync(this.files.pid, String(pid));
    const deadline = Date.now() + 5000;
    // The socket file appears a moment before charon accepts on it: wait until a connect succeeds.
    while (!(await accepts(this.files.vici))) {
      const alive = isAlive(pid);
      if (!alive || Date.now() > deadline) {
        if (alive) await this.stopCharon(pid);
        rmSync(this.files.pid, { force: true });
        throw new Error(`failed to start charon: it ${alive ? 'did not open its vici socket within 5 s' : 'exited at start'}: ${tail(this.files.log)}`);
      }
      await sleep(10);
    }
    // Only a start that worked is watched: one that failed is the sync's to retry, with backoff.
    this.watchCharon(watchExit({ child: child! }, (e) => this.exited(e)));
  }

  /** `env -i ...`: swanctl gets neither the agent's environment (which holds the PSK) nor /etc/swanctl's credentials. */
  private swanctlEnv(): string[] {
    return ['-i', `PATH=${CLEAN_PATH}`, `STRONGSWAN_CONF=${this.files.strongswanConf}`, `SWANCTL_DIR=${this.files.swanctlDir}`];
  }

  private swanctl(args: readonly string[]): Promise<string> {
    return mustRun(this.opts.runner, 'env', [...this.swanctlEnv(), 'swanctl', ...args, '--uri', this.viciUri]);
  }

  /**
   * Makes charon's connections exactly one per peer in `peers` (peers without destinations or
   * local subnets are skipped), as the gateway of `gateway`. Loads only when the generated config differs
   * from what this instance last loaded or charon's connections (`--list-conns`) are not the
   * configured ones (someone unloaded one); connections that left the plan are unloaded and their SAs
   * terminated, and responder connections that changed are re-established (initiators are restarted
   * by charon itself when their config is replaced).
   */
  async setPeers(peers: readonly PeerPlan[], gateway: string): Promise<{ loaded: boolean; connections: string[]; removed: string[]; restarted: string[]; refused: Dropped[] }> {
    if (!this.opts.psk) throw new Error(`failed to configure IPsec peers of ${gateway}: this node holds no PSK (only gateway candidates mount the PSK Secret)`);
    const rendered = renderSwanctlConf({ gateway, port: this.opts.port, psk: this.opts.psk, peers });
    const connections = [...rendered.blocks.keys()];
    const refused = rendered.refused;
    if (this.loaded?.text === rendered.text && sameNames(await this.loadedConnections(), connections)) return { loaded: false, connections, removed: [], restarted: [], refused };
    writeSecretFile(this.files.swanctlConf, rendered.text);
    await attempt(`load the IPsec connections of ${gateway} (${connections.length} peers)`, () => this.swanctl(['--load-all', '--noprompt', '--file', this.files.swanctlConf]));
    const before = this.loaded;
    this.loaded = rendered;
    // Every connection in this charon is ours: SAs of connections no longer configured (also ones
    // loaded by a previous agent) are terminated, since unloading a responder connection keeps them.
    const active = new Set((await this.established()).map((sa) => sa.connection));
    const removed = [...new Set([...(before?.blocks.keys() ?? []), ...active])].filter((c) => !rendered.blocks.has(c)).sort();
    const restarted = before
      ? [...rendered.blocks].filter(([c, block]) => before.blocks.has(c) && before.blocks.get(c) !== block && !rendered.initiators.has(c)).map(([c]) => c)
      : [];
    for (const c of [...removed, ...restarted]) {
      // A terminate of an SA that went away meanwhile is no error.
      if (active.has(c)) await this.opts.runner.run('env', [...this.swanctlEnv(), 'swanctl', '--terminate', '--ike', c, '--force', '--uri', this.viciUri]);
    }
    return { loaded: true, connections, removed, restarted, refused };
  }

  /**
   * Re-initiates the connections we start that have no SA up or on its way. charon retries lost
   * packets by itself, but not a refusal: a peer whose charon had not loaded our connection yet
   * (it took over a moment ago) answers NO_PROPOSAL_CHOSEN, and that attempt is over for good.
   * Returns the gateways re-initiated.
   */
  async reinitiate(): Promise<string[]> {
    const loaded = this.loaded;
    if (!loaded?.initiators.size) return [];
    const up = new Set(
      (await this.established()).filter((sa) => sa.state === 'CONNECTING' || (sa.state === 'ESTABLISHED' && sa.children.some((c) => c.state === 'INSTALLED'))).map((sa) => sa.connection),
    );
    const started: string[] = [];
    for (const c of [...loaded.initiators].sort()) {
      if (up.has(c)) continue;
      // --timeout 1: swanctl detaches after a second; charon carries on without it.
      await this.opts.runner.run('env', [...this.swanctlEnv(), 'swanctl', '--initiate', '--child', c, '--ike', c, '--timeout', '1', '--uri', this.viciUri]);
      started.push(loaded.gateways.get(c) ?? c);
    }
    return started;
  }

  /** The IKE_SAs charon has now, with their CHILD_SAs. */
  async established(): Promise<IpsecSa[]> {
    return parseListSas(await attempt('list the IPsec SAs', () => this.swanctl(['--list-sas'])), this.loaded?.gateways);
  }

  /** Names of the connections loaded in charon now. */
  async loadedConnections(): Promise<string[]> {
    return parseListConns(await attempt('list the IPsec connections', () => this.swanctl(['--list-conns'])));
  }

  /** Stops the charon we started (by its recorded PID only) and removes the files this backend created. */
  async cleanUp(): Promise<void> {
    const pid = this.pid();
    if (pid !== undefined) await this.stopCharon(pid);
    for (const f of [this.files.pid, this.files.vici, this.files.swanctlConf, `${this.files.swanctlConf}.tmp`, this.files.strongswanConf, this.files.log]) rmSync(f, { force: true });
    tryRmdir(this.files.swanctlDir);
    tryRmdir(this.opts.stateDir);
    this.loaded = undefined;
  }

  /** Stops watching the daemon, which keeps running (the next agent adopts it by its recorded PID). */
  release(): void {
    this.watch?.stop();
    this.watch = undefined;
  }

  private async stopCharon(pid: number): Promise<void> {
    // Stopping it is ours to do, not an exit to report.
    if (this.watch?.pid === pid) {
      this.watch.stop();
      this.watch = undefined;
    }
    // SIGTERM: charon deletes its SAs (telling peers), routes, rule and TUN device on the way out.
    await stopOwnedProcess(pid, () => isOurCharon(pid, this.files.strongswanConf), 3000);
  }
}

interface Rendered {
  readonly text: string;
  /** Connection name → its `connections` block (for change detection). */
  readonly blocks: Map<string, string>;
  /** Connection name → the remote Gateway it stands for. */
  readonly gateways: Map<string, string>;
  /** Connections with start_action = start. */
  readonly initiators: Set<string>;
  /** Peers left out because a value did not validate (the others are still configured). */
  readonly refused: Dropped[];
}

/** strongswan.conf for our charon (and the swanctl invocations talking to it). */
export function renderStrongswanConf(o: { vici: string; port: number; table: number; mode: IpsecMode }): string {
  const kernel = o.mode === 'userspace' ? 'kernel-libipsec kernel-netlink' : 'kernel-netlink';
  return [
    '# Written by the raven agent; regenerated on start.',
    'charon {',
    `  load = random nonce aes sha1 sha2 hmac gmp kdf ${kernel} socket-default vici`,
    // IKE on a random port; our configured port is the NAT-T port, used from the first packet.
    '  port = 0',
    `  port_nat_t = ${o.port}`,
    `  routing_table = ${o.table}`,
    `  routing_table_prio = ${o.table}`,
    '  install_virtual_ip = no',
    // Retransmit after 1 s, then 1.4x (strongSwan: 4 s, 1.8x): a gateway that has just taken over
    // and had not loaded its config when our first message came is retried within a second or two.
    '  retransmit_timeout = 1.0',
    '  retransmit_base = 1.4',
    // IKE events, config and kernel errors; not every packet (DPD alone would log lines every 10 s).
    '  filelog {',
    '    stderr {',
    '      default = 0',
    '      ike = 1',
    '      cfg = 1',
    '      knl = 1',
    '      time_format = %F %T',
    '    }',
    '  }',
    '  syslog {',
    '    daemon {',
    '      default = -1',
    '    }',
    '  }',
    '  plugins {',
    '    vici {',
    `      socket = ${o.vici}`,
    '    }',
    '  }',
    '}',
    'swanctl {',
    '  load = random',
    '}',
    '',
  ].join('\n');
}

/**
 * swanctl.conf: one IKEv2 PSK connection per peer. Every value is validated (names, CIDRs, IPs)
 * before it is written: a peer plan must not be able to inject config.
 *
 * IKE identities are Gateway names (`fqdn:<gateway>`), not node names: whichever node is a
 * region's active gateway, it authenticates as its region (the PSK is shared by the whole mesh, so
 * a node identity would prove nothing more). A responder's connection therefore does not change
 * when the remote region fails over, and the new gateway's first IKE_SA_INIT is accepted at once
 * (`unique = replace` retires the old gateway's SA).
 */
export function renderSwanctlConf(o: { gateway: string; port: number; psk: string; peers: readonly PeerPlan[] }): Rendered {
  if (!validName(o.gateway)) throw new Error(`ipsec: gateway name ${JSON.stringify(o.gateway)} is not a DNS-1123 name`);
  const blocks = new Map<string, string>();
  const gateways = new Map<string, string>();
  const initiators = new Set<string>();
  const secrets: string[] = [];
  const secret = `0x${Buffer.from(o.psk, 'utf8').toString('hex')}`;
  const refused: Dropped[] = [];
  const peers = [...o.peers].sort((a, b) => (a.gateway < b.gateway ? -1 : a.gateway > b.gateway ? 1 : 0));
  for (const p of peers) {
    // One peer with a bad value is left out; it must not take every other peer's tunnel with it.
    let remote: string[], local: string[], ep: { host: string; port: number } | undefined;
    const name = `raven-${p.gateway.replaceAll('.', '_')}`;
    try {
      if (!validName(p.gateway)) throw new Error(`ipsec: gateway name ${JSON.stringify(p.gateway)} is not a DNS-1123 name`);
      remote = [...new Set(p.allowedIPs.map((s) => cidr(s, `allowed IP of ${p.gateway}`)))].sort();
      local = [...new Set(p.localSubnets.map((s) => cidr(s, `local subnet towards ${p.gateway}`)))].sort();
      if (blocks.has(name)) throw new Error(`ipsec: two peers for gateway ${p.gateway}`);
      ep = p.endpoint ? endpoint(p.endpoint) : undefined;
    } catch (err) {
      refused.push({ source: shown(p.gateway), kind: 'peer', reason: (err as Error).message });
      continue;
    }
    if (!remote.length || !local.length) continue;
    // Who initiates: the side that has an endpoint. When both do (both reachable), only the gateway
    // with the smaller name starts and the other installs a trap, so they do not race; when we are
    // behind NAT (keepalive set) or punching edge-to-edge, the peer cannot dial us: we start.
    const start = ep && (p.keepaliveSeconds !== undefined || p.path === 'edge-to-edge' || o.gateway < p.gateway);
    const action = start ? 'start' : ep ? 'trap' : 'none';
    if (start) initiators.add(name);
    const block = [
      `  ${name} {`,
      '    version = 2',
      `    local_port = ${o.port}`,
      `    remote_addrs = ${ep ? ep.host : '%any'}`,
      ...(ep ? [`    remote_port = ${ep.port}`] : []),
      `    proposals = ${IKE_PROPOSAL}`,
      '    dpd_delay = 10s',
      '    keyingtries = 0',
      '    unique = replace',
      '    local {',
      '      auth = psk',
      `      id = fqdn:${o.gateway}`,
      '    }',
      '    remote {',
      '      auth = psk',
      `      id = fqdn:${p.gateway}`,
      '    }',
      '    children {',
      `      ${name} {`,
      `        local_ts = ${local.join(',')}`,
      `        remote_ts = ${remote.join(',')}`,
      `        esp_proposals = ${ESP_PROPOSAL}`,
      `        start_action = ${action}`,
      `        dpd_action = ${start ? 'restart' : ep ? 'trap' : 'clear'}`,
      `        close_action = ${start ? 'start' : ep ? 'trap' : 'none'}`,
      '      }',
      '    }',
      '  }',
    ].join('\n');
    blocks.set(name, block);
    gateways.set(name, p.gateway);
    secrets.push(['  ike-' + name + ' {', `    id-local = fqdn:${o.gateway}`, `    id-remote = fqdn:${p.gateway}`, `    secret = ${secret}`, '  }'].join('\n'));
  }
  const text = [
    '# Written by the raven agent; regenerated on every change. Holds the PSK: mode 0600.',
    'connections {',
    ...blocks.values(),
    '}',
    'secrets {',
    ...secrets,
    '}',
    '',
  ].join('\n');
  return { text, blocks, gateways, initiators, refused };
}

/** Connection names from `swanctl --list-conns` (default format: `<name>: IKEv2, ...` at the line start). */
export function parseListConns(out: string): string[] {
  return out.split('\n').flatMap((line) => /^(\S+): IKEv\d/.exec(line)?.[1] ?? []).sort();
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i]);
}

/** Parses `swanctl --list-sas` (default format). */
export function parseListSas(out: string, gateways?: ReadonlyMap<string, string>): IpsecSa[] {
  const sas: { gateway: string; connection: string; uniqueId: number; state: string; remoteId?: string; remote?: string; establishedSecondsAgo?: number; children: IpsecChild[] }[] = [];
  let child: { name: string; state: string; localTs: string[]; remoteTs: string[] } | undefined;
  for (const line of out.split('\n')) {
    let m = /^(\S+): #(\d+), (\w+), IKEv\d/.exec(line);
    if (m) {
      sas.push({ gateway: gateways?.get(m[1]!) ?? m[1]!, connection: m[1]!, uniqueId: Number(m[2]), state: m[3]!, children: [] });
      child = undefined;
      continue;
    }
    const sa = sas.at(-1);
    if (!sa) continue;
    if ((m = /^ {2}remote '([^']*)' @ (\S+)/.exec(line))) {
      sa.remoteId = m[1]!;
      sa.remote = m[2]!;
    } else if ((m = /^ {2}established (\d+)s ago/.exec(line))) {
      sa.establishedSecondsAgo = Number(m[1]);
    } else if ((m = /^ {2}(\S+): #\d+, reqid \d+, (\w+)/.exec(line))) {
      child = { name: m[1]!, state: m[2]!, localTs: [], remoteTs: [] };
      sa.children.push(child);
    } else if (child && (m = /^ {4}(local|remote) +(.+)$/.exec(line))) {
      (m[1] === 'local' ? child.localTs : child.remoteTs).push(...m[2]!.trim().split(/\s+/));
    }
  }
  return sas;
}

function validName(s: string): boolean {
  return s.length > 0 && s.length <= 253 && DNS_NAME.test(s);
}

function cidr(s: string, what: string): string {
  const m = /^([0-9a-fA-F.:]+)\/(\d{1,3})$/.exec(s);
  const family = m ? isIP(m[1]!) : 0;
  if (!m || !family || Number(m[2]) > (family === 4 ? 32 : 128)) throw new Error(`ipsec: ${what} ${shown(s)} is not a CIDR`);
  return s;
}

/** `ip:port` with the address in canonical form (see `canonicalEndpoint`). */
function endpoint(s: string): { host: string; port: number } {
  const ep = canonicalEndpoint(s);
  if (!ep.ok) throw new Error(`ipsec: endpoint ${ep.reason}`);
  return ep.value;
}

/** Writes through a fresh 0600 file and renames it into place, so the PSK is never readable by others. */
function writeSecretFile(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  rmSync(tmp, { force: true });
  writeFileSync(tmp, text, { mode: 0o600, flag: 'wx' });
  renameSync(tmp, path);
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

function tail(path: string): string {
  const text = readIfExists(path) ?? '';
  return text.trim().split('\n').slice(-5).join(' | ') || '(no output)';
}

function tryRmdir(path: string): void {
  try {
    rmdirSync(path);
  } catch {
    // not empty (not only ours) or gone
  }
}

/** Whether a unix socket at `path` accepts a connection now. */
function accepts(path: string): Promise<boolean> {
  if (!existsSync(path)) return Promise.resolve(false);
  return new Promise((resolve) => {
    const c = connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Guards against PID reuse and against other charons (the host's, other nodes' in tests): ours is
 * a live charon started with our STRONGSWAN_CONF. Until the exec chain reaches charon, the process
 * is still our `ip netns exec`/`unshare`/`sh` with that environment, which is ours too.
 */
function isOurCharon(pid: number, conf: string): boolean {
  try {
    if (!isAlive(pid)) return false;
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    return env.includes(`STRONGSWAN_CONF=${conf}`) && argv.some((a) => /(^|\/)(charon|ip|unshare|sh)$/.test(a));
  } catch {
    return false;
  }
}
