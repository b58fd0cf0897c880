/**
 * The lab's layout, pure: from a topology, every network namespace, link, address and route a
 * one-machine lab of that cluster needs, with names that are the lab's alone.
 *
 * Shape (see docs/0005-lab.md):
 *   switch netns  `<prefix>-sw`: one bridge per region LAN, and the "internet": a router with a
 *                 point-to-point link to every host with a public address (cloud gateways, NATs)
 *   node netns    `<prefix>-n<i>`: lan0 on its region's bridge; wan0 when it has a public IP;
 *                 pod0 towards its pod
 *   pod netns     `<prefix>-p<i>`: eth0, one address from the node's pod subnet
 *   NAT netns     `<prefix>-r<j>`: the router of a region that accepts no dials (underNAT, or not
 *                 exposed; src/topology/mesh.ts): masquerade from its LAN to its public address
 */
import { createHash } from 'node:crypto';
import ipaddr from 'ipaddr.js';
import type { Region, Topology } from '../topology/model.js';
import { acceptsDials, regionEndpoint } from '../topology/mesh.js';

export interface LabOptions {
  /** Lab name: names everything; [a-z0-9-], at most 20 characters. */
  readonly name: string;
  /** Nodes made for a region that names none (membership by selector only). */
  readonly nodesPerRegion: number;
  /** NAT routers map every flow to a random port (symmetric NAT: hole punching fails). */
  readonly symmetricNAT: boolean;
  /** Percent of WAN packets dropped in each direction at every NAT and public host (0 = none). */
  readonly wanLossPercent: number;
  /** Give every edge region the same LAN range (node IPs conflict across regions, as in the field). */
  readonly sameEdgeLAN: boolean;
  /** One-way delay of every region's uplink, in ms (0: plain veth links). @default DEFAULT_WAN_DELAY_MS */
  readonly wanDelayMs?: number;
  /** Per region (by name), overriding `wanDelayMs`. */
  readonly regionWanDelayMs?: Readonly<Record<string, number>>;
}

/**
 * One-way delay of every region's uplink unless set: two regions are 4 × this apart in round-trip
 * time (40 ms), a realistic distance between sites of one country.
 */
export const DEFAULT_WAN_DELAY_MS = 10;
/** The longest one-way delay a lab takes. */
export const MAX_WAN_DELAY_MS = 5000;

export interface LabNode {
  readonly name: string;
  readonly region: string;
  readonly index: number;
  readonly netns: string;
  readonly podNetns: string;
  readonly lanIP: string;
  readonly podCIDR: string;
  /** The node's end of its pod link (first address of the pod subnet). */
  readonly podGatewayIP: string;
  readonly podIP: string;
  /** Set on cloud endpoints with `publicIP`: the address other regions dial, on wan0. */
  readonly publicIP?: string;
  /** The switch's end of wan0. */
  readonly wanPort?: string;
  /** Tunnel device (WireGuard): unique on the host, since wireguard-go's sockets are global. */
  readonly device: string;
  /** Labels of the Node object (its region's selector, if any). */
  readonly labels: Readonly<Record<string, string>>;
}

export interface LabRegion {
  readonly name: string;
  readonly index: number;
  readonly gateway: string;
  readonly lan: string;
  /** Bridge in the switch netns. */
  readonly bridge: string;
  /** Present for regions that reach the others only through outbound NAT. */
  readonly nat?: { readonly netns: string; readonly lanIP: string; readonly publicIP: string; readonly wanPort: string };
  readonly nodes: readonly string[];
  /** One-way delay of the region's uplinks (its NAT router's, or each public host's), ms; 0 = none. */
  readonly wanDelayMs: number;
}

export interface LabPlan {
  readonly name: string;
  readonly prefix: string;
  readonly switchNetns: string;
  readonly regions: readonly LabRegion[];
  readonly nodes: readonly LabNode[];
  readonly options: LabOptions;
}

/** The address the switch holds on every WAN link; hosts route the internet through it. */
export const WAN_ROUTER_IP = '169.254.0.1';
const NAME = /^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$/;
/** Lab-assigned pod ranges when a region declares none: 10.240.0.0/12, a /20 per region. */
const DEFAULT_POD_POOL = '10.240.0.0';

export function checkLabName(name: string): void {
  if (!NAME.test(name)) throw new Error(`lab name "${name}" must be 1-20 characters of a-z, 0-9 and "-" (not at either end); give --name`);
}

export function planLab(t: Topology, options: LabOptions): LabPlan {
  checkLabName(options.name);
  const prefix = `rl-${options.name}`;
  const tag = createHash('sha256').update(options.name).digest('hex').slice(0, 4);
  for (const r of t.regions) {
    if (r.exposure === 'LoadBalancer') throw new Error(`region "${r.name}": raven lab does not emulate cloud load balancers; use exposure: PublicIP with a publicIP per endpoint for the lab`);
  }
  for (const [name, ms] of Object.entries(options.regionWanDelayMs ?? {})) {
    if (!t.regions.some((r) => r.name === name)) throw new Error(`--wan-delay ${name}=${ms}: the topology has no region "${name}" (it has ${t.regions.map((r) => r.name).join(', ')})`);
  }
  for (const ms of [options.wanDelayMs ?? 0, ...Object.values(options.regionWanDelayMs ?? {})]) {
    if (!(Number.isFinite(ms) && ms >= 0 && ms <= MAX_WAN_DELAY_MS)) throw new Error(`a WAN delay must be 0 to ${MAX_WAN_DELAY_MS} ms, not ${ms}`);
  }
  const regions: LabRegion[] = [];
  const nodes: LabNode[] = [];
  for (const [i, r] of t.regions.entries()) {
    const names = memberNames(r, options.nodesPerRegion);
    if (names.length > 200) throw new Error(`region "${r.name}" has ${names.length} nodes; the lab supports at most 200 per region`);
    // A region others dial sits on the internet; every other one behind a NAT router of its own.
    const reachable = acceptsDials(r.exposure, regionEndpoint(r));
    const shared = options.sameEdgeLAN && !reachable;
    const lanBase = shared ? [192, 168, 1] : [172, 16 + Math.floor(i / 256), i % 256];
    const lan = `${lanBase.join('.')}.0/24`;
    const pods = podSubnets(r, i, names.length);
    const region: LabRegion = {
      name: r.name,
      index: i,
      gateway: r.gatewayName,
      lan,
      bridge: `br${i}`,
      ...(!reachable && { nat: { netns: `${prefix}-r${i}`, lanIP: `${lanBase.join('.')}.1`, publicIP: `198.18.${Math.floor(i / 250)}.${(i % 250) + 1}`, wanPort: `wr${i}` } }),
      nodes: names,
      wanDelayMs: options.regionWanDelayMs?.[r.name] ?? options.wanDelayMs ?? DEFAULT_WAN_DELAY_MS,
    };
    regions.push(region);
    for (const [k, node] of names.entries()) {
      const index = nodes.length;
      const podCIDR = pods[k]!;
      const [net] = ipaddr.parseCIDR(podCIDR);
      const bytes = net.toByteArray();
      const at = (n: number): string => ipaddr.fromByteArray([...bytes.slice(0, -1), bytes.at(-1)! + n]).toString();
      const publicIP = r.exposure === 'PublicIP' ? r.endpoints.find((e) => e.node === node && e.publicIP)?.publicIP : undefined;
      nodes.push({
        name: node,
        region: r.name,
        index,
        netns: `${prefix}-n${index}`,
        podNetns: `${prefix}-p${index}`,
        lanIP: `${lanBase.join('.')}.${11 + k}`,
        podCIDR,
        podGatewayIP: at(1),
        podIP: at(2),
        ...(publicIP && { publicIP, wanPort: `wn${index}` }),
        device: `rw${tag}${index.toString(36)}`,
        labels: { ...(r.nodeSelector ?? {}) },
      });
    }
  }
  // Lab-assigned pod ranges must not collide with any range the topology declares.
  const declared = [...t.regions.flatMap((r) => r.podCIDRs.map((c) => ({ c, what: `pod range ${c} of region "${r.name}"` }))), ...t.serviceCIDRs.map((c) => ({ c, what: `service range ${c}` }))];
  for (const n of nodes) {
    const [a, la] = ipaddr.parseCIDR(n.podCIDR);
    for (const d of declared) {
      const [b, lb] = ipaddr.parseCIDR(d.c);
      if (a.kind() !== b.kind()) continue;
      if (a.match(b, lb) || b.match(a, la)) {
        const own = t.regions.find((r) => r.name === n.region)!.podCIDRs.includes(d.c);
        if (!own) throw new Error(`the lab's pod subnet ${n.podCIDR} for node "${n.name}" overlaps the ${d.what}; declare podCIDRs for region "${n.region}"`);
      }
    }
  }
  const seen = new Map<string, string>();
  for (const n of nodes) {
    const other = seen.get(n.name);
    if (other !== undefined) throw new Error(`node "${n.name}" is in regions "${other}" and "${n.region}"`);
    seen.set(n.name, n.region);
  }
  return { name: options.name, prefix, switchNetns: `${prefix}-sw`, regions, nodes, options };
}

/**
 * Members named by the topology (listed, or endpoints); a region that selects members by labels
 * gets `<region>-1`, `-2`, ... too, up to `perRegion` nodes, all carrying its selector's labels.
 */
function memberNames(r: Region, perRegion: number): string[] {
  const named = [...new Set([...r.nodes, ...r.endpoints.map((e) => e.node)])].sort();
  if (!r.nodeSelector) return named;
  const extra: string[] = [];
  for (let k = 1; named.length + extra.length < perRegion; k++) if (!named.includes(`${r.name}-${k}`)) extra.push(`${r.name}-${k}`);
  return [...named, ...extra];
}

/**
 * A /24 per node (IPv4): carved in order from the region's first IPv4 pod range when it declares
 * one (which must be large enough), else from a lab pool the topology does not use.
 */
function podSubnets(r: Region, regionIndex: number, count: number): string[] {
  const v4 = r.podCIDRs.find((c) => c.includes('.'));
  let base: number[];
  let capacity: number;
  if (v4) {
    const [addr, len] = ipaddr.parseCIDR(v4);
    if (len > 24) throw new Error(`region "${r.name}": pod range ${v4} is smaller than the /24 the lab gives each node`);
    base = addr.toByteArray();
    capacity = 2 ** (24 - len);
  } else {
    const pool = ipaddr.parse(DEFAULT_POD_POOL).toByteArray();
    base = [pool[0]!, pool[1]! + Math.floor(regionIndex / 16), (regionIndex % 16) * 16, 0];
    capacity = 16;
    if (regionIndex >= 256) throw new Error('the lab assigns pod ranges for at most 256 regions that declare none');
  }
  if (count > capacity) throw new Error(`region "${r.name}": ${count} nodes need ${count} /24 pod subnets, its range holds ${capacity}`);
  const start = base[0]! * 2 ** 24 + base[1]! * 2 ** 16 + base[2]! * 2 ** 8;
  return Array.from({ length: count }, (_, k) => {
    const n = start + k * 256;
    return `${Math.floor(n / 2 ** 24) % 256}.${Math.floor(n / 2 ** 16) % 256}.${Math.floor(n / 2 ** 8) % 256}.0/24`;
  });
}

/** Node of the plan by name, or a clear error listing the lab's nodes. */
export function labNode(plan: LabPlan, name: string): LabNode {
  const n = plan.nodes.find((x) => x.name === name);
  if (!n) throw new Error(`lab "${plan.name}" has no node "${name}"; its nodes: ${plan.nodes.map((x) => x.name).join(', ')}`);
  return n;
}
