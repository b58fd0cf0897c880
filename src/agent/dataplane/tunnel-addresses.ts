/**
 * Host addresses the agent holds on its tunnel device: the gateway's probe address and, with
 * strongSwan's userspace ESP, one address inside each local subnet it protects that the host does
 * not already have (kernel-libipsec refuses a CHILD_SA otherwise). They live on our device only, so
 * they vanish with it; `set` diffs against `ip -json addr` and touches nothing else.
 */
import ipaddr from 'ipaddr.js';
import { type CommandRunner, mustRun } from '../../platform/command-runner.js';
import { hostCidr } from '../../platform/cidr.js';
import { attempt } from './errors.js';

interface AddrInfo {
  family?: string;
  local?: string;
  prefixlen?: number;
  scope?: string;
}

export class TunnelAddresses {
  constructor(private readonly runner: CommandRunner, private readonly netns?: string) {}

  private ip(args: readonly string[]): readonly string[] {
    return this.netns ? ['-n', this.netns, ...args] : args;
  }

  /** Global host addresses (/32, /128) on `device`: the ones we manage. */
  async onDevice(device: string): Promise<string[]> {
    return (await this.read(['dev', device])).filter((a) => a.prefixlen === (a.family === 'inet6' ? 128 : 32)).map((a) => a.local!).sort();
  }

  /** Every global address of the host (any device). */
  async all(): Promise<string[]> {
    return (await this.read([])).map((a) => a.local!).sort();
  }

  private async read(dev: readonly string[]): Promise<AddrInfo[]> {
    const out = await attempt(`read the addresses${dev.length ? ` of ${dev[1]}` : ''}`, () => mustRun(this.runner, 'ip', this.ip(['-json', 'addr', 'show', ...dev])));
    const links = JSON.parse(out || '[]') as { addr_info?: AddrInfo[] }[];
    return links.flatMap((l) => l.addr_info ?? []).filter((a) => a.local && a.scope !== 'link' && a.scope !== 'host');
  }

  /** Makes our addresses on `device` exactly `desired`. */
  async set(device: string, desired: readonly string[]): Promise<{ added: string[]; removed: string[] }> {
    const have = new Set(await this.onDevice(device));
    const want = new Set(desired);
    const added = [...want].filter((a) => !have.has(a)).sort();
    const removed = [...have].filter((a) => !want.has(a)).sort();
    for (const a of removed) await attempt(`remove address ${hostCidr(a)} from ${device}`, () => mustRun(this.runner, 'ip', this.ip(['addr', 'del', hostCidr(a), 'dev', device])));
    // nodad: the address is ours alone by construction; waiting for IPv6 DAD would only delay probes.
    for (const a of added) await attempt(`add address ${hostCidr(a)} to ${device}`, () => mustRun(this.runner, 'ip', this.ip(['addr', 'add', hostCidr(a), 'dev', device, ...(a.includes(':') ? ['nodad'] : [])])));
    return { added, removed };
  }
}


/**
 * For each subnet holding none of `owned`, its last address (never a pod's under host-local or
 * flannel IPAM, and not the probe address, which is the first). Pure.
 */
export function missingSubnetAnchors(subnets: readonly string[], owned: readonly string[]): string[] {
  const addrs = owned.flatMap((a) => {
    try {
      return [ipaddr.parse(a)];
    } catch {
      return [];
    }
  });
  const out = new Set<string>();
  for (const s of subnets) {
    let range: [ipaddr.IPv4 | ipaddr.IPv6, number];
    try {
      range = ipaddr.parseCIDR(s);
    } catch {
      continue;
    }
    if (addrs.some((a) => a.kind() === range[0].kind() && a.match(range))) continue;
    out.add(range[0].kind() === 'ipv4' ? ipaddr.IPv4.broadcastAddressFromCIDR(s).toString() : lastIPv6(range[0] as ipaddr.IPv6, range[1]));
  }
  return [...out].sort();
}

function lastIPv6(addr: ipaddr.IPv6, len: number): string {
  const bytes = addr.toByteArray();
  for (let bit = len; bit < 128; bit++) bytes[bit >> 3]! |= 0x80 >> (bit & 7);
  return ipaddr.fromByteArray(bytes).toString();
}
