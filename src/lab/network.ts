/**
 * Builds and removes a lab's network on the real kernel, from its plan. Creation is batched: one
 * `ip -batch` in the root namespace makes every namespace and veth (each end created directly in
 * its namespace, so the root namespace never holds a link of ours), then one batch per namespace
 * configures it. Removal deletes exactly the namespaces whose names carry the lab's prefix; their
 * links go with them.
 */
import type { CommandRunner } from '../platform/command-runner.js';
import { mustRun } from '../platform/command-runner.js';
import { type LabNode, type LabPlan, WAN_ROUTER_IP } from './layout.js';
import type { DelayLine } from './wan-delay.js';

/**
 * Commands as data: `ip` batches per namespace (undefined = root), sysctls and nft rulesets, and
 * the WAN links made of delay lines (started between the root batch and the namespaces' batches).
 */
export interface NetworkScript {
  readonly root: string[];
  readonly delayLines: DelayLine[];
  readonly perNamespace: Map<string, string[]>;
  readonly sysctls: Map<string, string[]>;
  readonly nft: Map<string, string>;
}

const ROUTER_SYSCTLS = ['net.ipv4.ip_forward=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0', 'net.ipv4.conf.all.send_redirects=0', 'net.ipv4.conf.default.send_redirects=0'];

/** Pure: everything `build` runs, in order. */
export function networkScript(plan: LabPlan): NetworkScript {
  const root: string[] = [];
  const per = new Map<string, string[]>();
  const sysctls = new Map<string, string[]>();
  const nft = new Map<string, string>();
  const delayLines: DelayLine[] = [];
  /** A WAN link between a host's wan0 and the switch's `port`: a veth pair, or a delay line. */
  const wanLink = (hostNetns: string, port: string, oneWayMs: number): void => {
    if (oneWayMs > 0) delayLines.push({ port, hostNetns, oneWayMs });
    else root.push(`link add wan0 netns ${hostNetns} type veth peer name ${port} netns ${sw}`);
  };
  const ns = (name: string): string[] => {
    let lines = per.get(name);
    if (!lines) per.set(name, (lines = ['link set lo up']));
    return lines;
  };
  const sw = plan.switchNetns;
  const all = [sw, ...plan.regions.flatMap((r) => (r.nat ? [r.nat.netns] : [])), ...plan.nodes.flatMap((n) => [n.netns, n.podNetns])];
  for (const n of all) root.push(`netns add ${n}`);

  // The switch: a bridge per region, and the internet router on point-to-point WAN links.
  sysctls.set(sw, ROUTER_SYSCTLS);
  for (const r of plan.regions) ns(sw).push(`link add ${r.bridge} type bridge`, `link set ${r.bridge} up`);
  const wan = (port: string, publicIP: string): void => {
    ns(sw).push(`addr add ${WAN_ROUTER_IP}/32 dev ${port}`, `link set ${port} up`, `route add ${publicIP}/32 dev ${port}`);
  };

  for (const r of plan.regions) {
    if (!r.nat) continue;
    const { netns, lanIP, publicIP, wanPort } = r.nat;
    root.push(`link add lan0 netns ${netns} type veth peer name r${r.index} netns ${sw}`);
    wanLink(netns, wanPort, r.wanDelayMs);
    ns(sw).push(`link set r${r.index} master ${r.bridge}`, `link set r${r.index} up`);
    wan(wanPort, publicIP);
    ns(netns).push(
      `addr add ${lanIP}/24 dev lan0`, 'link set lan0 up',
      `addr add ${publicIP}/32 dev wan0`, 'link set wan0 up', `route add default via ${WAN_ROUTER_IP} dev wan0 onlink`,
    );
    sysctls.set(netns, ROUTER_SYSCTLS);
    nft.set(netns, natRuleset(plan.options.symmetricNAT, plan.options.wanLossPercent));
  }

  for (const n of plan.nodes) {
    const region = plan.regions.find((r) => r.name === n.region)!;
    root.push(`link add lan0 netns ${n.netns} type veth peer name l${n.index} netns ${sw}`, `link add pod0 netns ${n.netns} type veth peer name eth0 netns ${n.podNetns}`);
    ns(sw).push(`link set l${n.index} master ${region.bridge}`, `link set l${n.index} up`);
    const lines = ns(n.netns);
    lines.push(`addr add ${n.lanIP}/24 dev lan0`, 'link set lan0 up', `addr add ${n.podGatewayIP}/32 dev pod0`, 'link set pod0 up', `route add ${n.podIP}/32 dev pod0`);
    // The cluster's own CNI, host-gw style: the other members' pod subnets via their LAN address.
    for (const other of plan.nodes) if (other.region === n.region && other !== n) lines.push(`route add ${other.podCIDR} via ${other.lanIP}`);
    if (n.publicIP) {
      wanLink(n.netns, n.wanPort!, region.wanDelayMs);
      wan(n.wanPort!, n.publicIP);
      lines.push(`addr add ${n.publicIP}/32 dev wan0`, 'link set wan0 up', `route add default via ${WAN_ROUTER_IP} dev wan0 onlink`);
      if (plan.options.wanLossPercent > 0) nft.set(n.netns, lossRuleset(plan.options.wanLossPercent));
    } else if (region.nat) {
      lines.push(`route add default via ${region.nat.lanIP}`);
    }
    sysctls.set(n.netns, [...ROUTER_SYSCTLS, 'net.ipv4.conf.lan0.rp_filter=0', 'net.ipv4.conf.pod0.rp_filter=0', ...(n.publicIP ? ['net.ipv4.conf.wan0.rp_filter=0'] : [])]);
    ns(n.podNetns).push(`addr add ${n.podIP}/32 dev eth0`, 'link set eth0 up', `route add ${n.podGatewayIP}/32 dev eth0`, `route add default via ${n.podGatewayIP} dev eth0`);
  }
  return { root, delayLines, perNamespace: per, sysctls, nft };
}

function lossRule(percent: number): string {
  return `oifname "wan0" numgen random mod 100 < ${percent} drop`;
}

/** Edge NAT: masquerade out of wan0; from the WAN only replies get in (as from any home router). */
export function natRuleset(symmetric: boolean, lossPercent: number): string {
  return [
    'table ip raven_lab {',
    '  chain nat_out {',
    '    type nat hook postrouting priority srcnat; policy accept;',
    `    oifname "wan0" masquerade${symmetric ? ' fully-random' : ''}`,
    '  }',
    '  chain from_wan {',
    '    type filter hook forward priority filter; policy accept;',
    '    iifname "wan0" ct state established,related accept',
    '    iifname "wan0" drop',
    '  }',
    '  chain to_router {',
    '    type filter hook input priority filter; policy accept;',
    '    iifname "wan0" ct state established,related accept',
    '    iifname "wan0" drop',
    '  }',
    ...(lossPercent > 0 ? ['  chain wan_loss {', '    type filter hook postrouting priority filter; policy accept;', `    ${lossRule(lossPercent)}`, '  }'] : []),
    '}',
    '',
  ].join('\n');
}

/** Loss on a public host's WAN egress (each WAN packet leaves exactly one host: loss counts once per direction). */
function lossRuleset(percent: number): string {
  return ['table ip raven_lab {', '  chain wan_loss {', '    type filter hook postrouting priority filter; policy accept;', `    ${lossRule(percent)}`, '  }', '}', ''].join('\n');
}

/** Starts one delay line (see wan-delay.ts); `buildNetwork` calls it for each. */
export type StartDelayLine = (line: DelayLine) => Promise<unknown>;

export async function buildNetwork(plan: LabPlan, runner: CommandRunner, startDelayLine?: StartDelayLine): Promise<void> {
  const script = networkScript(plan);
  await mustRun(runner, 'ip', ['-batch', '-'], script.root.join('\n') + '\n');
  if (script.delayLines.length && !startDelayLine) throw new Error('this lab has WAN delays but nothing to start its delay lines');
  await Promise.all(script.delayLines.map((l) => startDelayLine!(l)));
  for (const [ns, lines] of script.perNamespace) await mustRun(runner, 'ip', ['-n', ns, '-batch', '-'], lines.join('\n') + '\n');
  for (const [ns, keys] of script.sysctls) await mustRun(runner, 'ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', ...keys]);
  for (const [ns, rules] of script.nft) await mustRun(runner, 'ip', ['netns', 'exec', ns, 'nft', '-f', '-'], rules);
}

/** The lab's namespaces that exist now (by prefix: also after a crash, whatever the state says). */
export async function labNamespaces(prefix: string, runner: CommandRunner): Promise<string[]> {
  const out = await mustRun(runner, 'ip', ['netns', 'list']);
  return out.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(`${prefix}-`)).sort();
}

/** Deletes every namespace of the lab; their links and routes go with them. */
export async function removeNetwork(prefix: string, runner: CommandRunner): Promise<string[]> {
  const names = await labNamespaces(prefix, runner);
  if (names.length) await mustRun(runner, 'ip', ['-batch', '-'], names.map((n) => `netns del ${n}`).join('\n') + '\n');
  return names;
}

/**
 * Unplugs a node (its switch ports go down: the node keeps its addresses and routes, as a powered-off
 * machine keeps its configuration), or plugs it back in.
 */
export async function setNodeLinks(plan: LabPlan, node: LabNode, up: boolean, runner: CommandRunner, o: { readonly keepWanDown?: boolean } = {}): Promise<void> {
  const wan = node.wanPort && !(up && o.keepWanDown) ? [node.wanPort] : [];
  const lines = [`l${node.index}`, ...wan].map((l) => `link set ${l} ${up ? 'up' : 'down'}`);
  // A port going down takes the router's route to the host's public address with it.
  if (up && wan.length) lines.push(`route replace ${node.publicIP}/32 dev ${node.wanPort}`);
  await mustRun(runner, 'ip', ['-n', plan.switchNetns, '-batch', '-'], lines.join('\n') + '\n');
}

/** A node's uplink in the switch: its own WAN port, or (behind NAT) its region's router's. */
export interface WanLink {
  readonly port: string;
  readonly publicIP: string;
  /** Set when the link is the NAT router's, shared by every node of that region. */
  readonly region?: string;
}

/** The uplink a WAN fault of `node` cuts, or an error naming why it has none. */
export function wanLinkOf(plan: LabPlan, node: LabNode): WanLink {
  if (node.wanPort && node.publicIP) return { port: node.wanPort, publicIP: node.publicIP };
  const region = plan.regions.find((r) => r.name === node.region);
  if (region?.nat) return { port: region.nat.wanPort, publicIP: region.nat.publicIP, region: region.name };
  throw new Error(`node "${node.name}" has no WAN link: no public address, and region "${node.region}" has no NAT router (its nodes reach other regions through their gateway's LAN)`);
}

/**
 * Sets the switch's end of an uplink down (the host sees its carrier go: its addresses and routes
 * stay, and packets out of it are lost, as with a cut cable) or up again, with the router's route
 * to the public address that going down removed.
 */
export async function setWanLink(plan: LabPlan, link: WanLink, up: boolean, runner: CommandRunner): Promise<void> {
  const lines = [`link set ${link.port} ${up ? 'up' : 'down'}`, ...(up ? [`route replace ${link.publicIP}/32 dev ${link.port}`] : [])];
  await mustRun(runner, 'ip', ['-n', plan.switchNetns, '-batch', '-'], lines.join('\n') + '\n');
}

/** The nftables table `fail --wan-loss` adds to a region's uplink hosts (and `restore` deletes whole). */
export const WAN_LOSS_TABLE = 'raven_lab_loss';

/** Drops `percent` % of the packets in and out of wan0, each direction on its own (a lossy uplink). */
export function wanLossRuleset(percent: number): string {
  if (!Number.isInteger(percent) || percent < 1 || percent > 100) throw new Error(`failed to add WAN loss: ${percent} is not a percentage from 1 to 100`);
  return [
    `table inet ${WAN_LOSS_TABLE} {`,
    '  chain in {',
    '    type filter hook prerouting priority raw; policy accept;',
    `    iifname "wan0" numgen random mod 100 < ${percent} counter drop`,
    '  }',
    '  chain out {',
    '    type filter hook postrouting priority filter + 10; policy accept;',
    `    oifname "wan0" numgen random mod 100 < ${percent} counter drop`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** The namespaces holding a region's uplink: its NAT router, or each of its hosts with a public address. */
export function uplinkHostsOf(plan: LabPlan, region: string): string[] {
  const r = plan.regions.find((x) => x.name === region);
  if (!r) throw new Error(`the lab has no region "${region}" (it has ${plan.regions.map((x) => x.name).join(', ')})`);
  if (r.nat) return [r.nat.netns];
  const hosts = plan.nodes.filter((n) => n.region === region && n.publicIP).map((n) => n.netns);
  if (!hosts.length) throw new Error(`region "${region}" has no WAN link: no NAT router and no host with a public address`);
  return hosts;
}

/** The nftables table `fail --what udp-block` adds to a node (and `restore` deletes whole). */
export const UDP_BLOCK_TABLE = 'raven_lab_block';

/** Drops every UDP packet to or from `port` that the node sends or receives (IKE, ESP-in-UDP, WireGuard). */
export function udpBlockRuleset(port: number): string {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`failed to block UDP: port ${port} is not 1-65535`);
  const chain = (name: string, hook: string): string[] => [
    `  chain ${name} {`,
    `    type filter hook ${hook} priority filter - 10; policy accept;`,
    `    udp dport ${port} counter drop`,
    `    udp sport ${port} counter drop`,
    '  }',
  ];
  return [`table inet ${UDP_BLOCK_TABLE} {`, ...chain('block_in', 'input'), ...chain('block_out', 'output'), '}', ''].join('\n');
}

export async function setUdpBlock(netns: string, port: number, blocked: boolean, runner: CommandRunner): Promise<void> {
  if (blocked) await mustRun(runner, 'ip', ['netns', 'exec', netns, 'nft', '-f', '-'], udpBlockRuleset(port));
  else await mustRun(runner, 'ip', ['netns', 'exec', netns, 'nft', 'delete', 'table', 'inet', UDP_BLOCK_TABLE]);
}
