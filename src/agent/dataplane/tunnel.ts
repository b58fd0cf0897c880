/**
 * The tunnel as the agent sees it: one interface over the WireGuard and IPsec backends, so the
 * agent's sync, health and cleanup do not care which one runs. Each adapter applies a gateway's
 * plan (device, probe address, peers) and reports per-peer handshake ages. Like the route table it
 * has the executors' shape: `set(desired)` reads what the kernel has and changes only what differs
 * (so the same call restores what someone else removed), `cleanUp()` removes everything of ours.
 */
import { join } from 'node:path';
import type { Dropped } from '../../platform/canonical.js';
import type { CommandRunner } from '../../platform/command-runner.js';
import { IpsecBackend } from './ipsec.js';
import type { NodePlan, PeerPlan } from '../plan.js';
import { missingSubnetAnchors, TunnelAddresses } from './tunnel-addresses.js';
import { type StaleSession, WireGuard } from './wireguard.js';

/** What a tunnel `set` changed: all empty when the kernel already matched the plan. */
export interface TunnelChanges {
  /** The backend was started: its device did not exist (or its process had died). */
  readonly started: boolean;
  /** Gateways whose peers were set (added or changed): the ones to nudge. */
  readonly peers: string[];
  /** Staged peers (remote standbys) that were set. */
  readonly staged: string[];
  /** Peers removed (WireGuard keys, IPsec connections). */
  readonly removed: string[];
  /** Host addresses added to and removed from the tunnel device. */
  readonly addresses: { readonly added: string[]; readonly removed: string[] };
}

export interface Tunnel {
  readonly kind: 'wireguard' | 'ipsec';
  /** Brings the backend up if needed and makes it match a gateway's plan, changing only what differs. */
  set(plan: NodePlan): Promise<TunnelChanges>;
  /** Whether anything of ours runs (a device or a charon), also one left by a previous agent. */
  running(): Promise<boolean>;
  /** Why the backend is not up (its process died, its device is gone), or null when it is. */
  problem(): Promise<string | null>;
  /** Removes everything the backend created; safe when nothing runs. */
  cleanUp(): Promise<void>;
  /** Stops watching the daemon and leaves everything running, for the next agent to adopt. */
  release(): void;
  /** The device holding the probe address, when the tunnel is up and has one. */
  probeDevice(): string | undefined;
  /** Seconds since the last handshake (WireGuard) or IKE_SA establishment (IPsec), per remote gateway. */
  handshakeAges(plan: NodePlan): Promise<Map<string, number>>;
  /** Re-initiates towards peers that should be up and are not (WireGuard.nudge, IpsecBackend.reinitiate). */
  nudge(plan: NodePlan): Promise<string[]>;
  /**
   * Starts a new session with peers we dial that stopped answering and have had no handshake since
   * (WireGuard.renewStale). IPsec has none to renew: charon's dead-peer detection and the periodic
   * nudge re-establish its IKE_SAs. Returns the gateways renewed.
   */
  renewStale(stale: readonly StaleSession[]): Promise<string[]>;
  /**
   * Whether the backend keeps retrying a peer by itself. WireGuard does (every 5 s); charon gives
   * up after a refusal, so the agent nudges an IPsec tunnel periodically.
   */
  readonly retriesByItself: boolean;
  /** The public key to publish (WireGuard); undefined for IPsec. */
  publicKey(): Promise<string | undefined>;
  /** Peers (or parts of them) the backend refused in the last `apply`, and why. */
  refused(): readonly Dropped[];
}

export interface TunnelOptions {
  readonly backend: 'wireguard' | 'ipsec';
  readonly node: string;
  readonly device: string;
  readonly port: number;
  readonly mtu: number;
  readonly stateDir: string;
  readonly runner: CommandRunner;
  readonly netns?: string;
  readonly psk?: string;
  /**
   * Called when the backend's userspace daemon (wireguard-go, charon) exits without our asking:
   * noticed at once for one we started (its exit event), within 200 ms for one adopted from an
   * earlier agent (its PID in /proc). Kernel WireGuard and kernel ESP have no daemon to watch.
   */
  readonly onExit?: (what: string) => void;
}

export function makeTunnel(o: TunnelOptions): Tunnel {
  return o.backend === 'wireguard' ? new WireGuardTunnel(o) : new IpsecTunnel(o);
}

class WireGuardTunnel implements Tunnel {
  readonly kind = 'wireguard';
  readonly retriesByItself = true;
  private readonly wg: WireGuard;
  private readonly addresses: TunnelAddresses;
  private up = false;

  constructor(private readonly o: TunnelOptions) {
    this.wg = new WireGuard({ device: o.device, port: o.port, mtu: o.mtu, stateDir: o.stateDir, runner: o.runner, ...(o.netns && { netns: o.netns }), ...(o.onExit && { onExit: o.onExit }) });
    this.addresses = new TunnelAddresses(o.runner, o.netns);
  }

  async set(plan: NodePlan): Promise<TunnelChanges> {
    const mode = await this.wg.up();
    this.up = true;
    const addresses = await this.addresses.set(this.o.device, plan.probeSource ? [plan.probeSource] : []);
    const peers = await this.wg.setPeers(plan.peers, plan.staged);
    return { started: mode !== 'existing', peers: peers.set, staged: peers.staged, removed: peers.removed, addresses };
  }

  running(): Promise<boolean> {
    return this.wg.exists();
  }

  problem(): Promise<string | null> {
    return this.wg.problem();
  }

  async cleanUp(): Promise<void> {
    this.up = false;
    await this.wg.cleanUp();
  }

  release(): void {
    this.wg.release();
  }

  probeDevice(): string | undefined {
    return this.up ? this.o.device : undefined;
  }

  async handshakeAges(plan: NodePlan): Promise<Map<string, number>> {
    const byKey = new Map(plan.peers.map((p) => [p.publicKey, p.gateway]));
    const now = Date.now() / 1000;
    const out = new Map<string, number>();
    for (const p of await this.wg.peers()) {
      const gw = byKey.get(p.publicKey);
      if (gw && p.latestHandshake > 0) out.set(gw, Math.max(0, Math.round(now - p.latestHandshake)));
    }
    return out;
  }

  nudge(plan: NodePlan): Promise<string[]> {
    // Only peers only we can dial (we are behind NAT): nudging both sides of a pair would make
    // their initiations cross, which is what the edge-to-edge stagger exists to avoid.
    return this.wg.nudge(plan.peers.filter((p: PeerPlan) => p.keepaliveSeconds !== undefined && p.path === 'direct'));
  }

  renewStale(stale: readonly StaleSession[]): Promise<string[]> {
    return this.wg.renewStale(stale);
  }

  publicKey(): Promise<string | undefined> {
    return this.wg.publicKey();
  }

  refused(): readonly Dropped[] {
    return this.wg.refused;
  }
}

class IpsecTunnel implements Tunnel {
  readonly kind = 'ipsec';
  readonly retriesByItself = false;
  private readonly ipsec: IpsecBackend;
  private readonly addresses: TunnelAddresses;
  private device?: string;
  private skipped: readonly Dropped[] = [];

  constructor(o: TunnelOptions) {
    // No PSK on nodes that are no gateway candidate: they never apply a tunnel plan (setPeers refuses).
    this.ipsec = new IpsecBackend({ node: o.node, stateDir: join(o.stateDir, 'ipsec'), runner: o.runner, port: o.port, ...(o.psk && { psk: o.psk }), ...(o.mtu >= 1280 && { mtu: o.mtu }), ...(o.netns && { netns: o.netns }), ...(o.onExit && { onExit: o.onExit }) });
    this.addresses = new TunnelAddresses(o.runner, o.netns);
  }

  async set(plan: NodePlan): Promise<TunnelChanges> {
    const { started } = await this.ipsec.up();
    this.device = this.ipsec.device;
    let addresses = { added: [] as string[], removed: [] as string[] };
    if (this.device) {
      // kernel-libipsec installs a route per CHILD_SA and needs an address of ours inside each
      // local subnet for it; the probe address is one, the rest are the subnets' last addresses.
      const ours = new Set(await this.addresses.onDevice(this.device));
      const owned = (await this.addresses.all()).filter((a) => !ours.has(a));
      const base = plan.probeSource ? [plan.probeSource] : [];
      const local = [...new Set(plan.peers.flatMap((p) => p.localSubnets))];
      addresses = await this.addresses.set(this.device, [...base, ...missingSubnetAnchors(local, [...owned, ...base])]);
    }
    const r = await this.ipsec.setPeers(plan.peers, plan.gateway!);
    this.skipped = r.refused;
    return { started, peers: r.loaded ? plan.peers.map((p) => p.gateway) : [], staged: [], removed: r.removed, addresses };
  }

  async running(): Promise<boolean> {
    return this.ipsec.pid() !== undefined;
  }

  problem(): Promise<string | null> {
    return this.ipsec.problem();
  }

  async cleanUp(): Promise<void> {
    this.device = undefined;
    await this.ipsec.cleanUp();
  }

  release(): void {
    this.ipsec.release();
  }

  probeDevice(): string | undefined {
    return this.device;
  }

  async handshakeAges(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const sa of await this.ipsec.established()) {
      if (sa.state === 'ESTABLISHED' && sa.establishedSecondsAgo !== undefined && sa.children.some((c) => c.state === 'INSTALLED')) out.set(sa.gateway, sa.establishedSecondsAgo);
    }
    return out;
  }

  nudge(): Promise<string[]> {
    return this.ipsec.reinitiate();
  }

  async renewStale(): Promise<string[]> {
    return [];
  }

  async publicKey(): Promise<string | undefined> {
    return undefined;
  }

  refused(): readonly Dropped[] {
    return this.skipped;
  }
}
