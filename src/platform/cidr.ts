/** CIDR parsing and overlap detection on top of ipaddr.js. Pure. */
import ipaddr from 'ipaddr.js';

export interface Cidr {
  readonly text: string;
  readonly family: 4 | 6;
  readonly first: bigint;
  readonly last: bigint;
}

export type CidrParse = { ok: true; cidr: Cidr } | { ok: false; reason: string };

export function parseCidr(text: string): CidrParse {
  let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number];
  try {
    // Pick the family first: the generic parseCIDR tries IPv6 and throws on every IPv4 range,
    // which made CIDR checks a tenth of a 1,000-region compile.
    parsed = text.includes(':') ? ipaddr.IPv6.parseCIDR(text) : ipaddr.IPv4.parseCIDR(text);
  } catch {
    return { ok: false, reason: `"${text}" is not a CIDR; write an address and prefix length such as 10.244.0.0/16` };
  }
  const [addr, len] = parsed;
  const family = addr.kind() === 'ipv4' ? 4 : 6;
  const bits = family === 4 ? 32 : 128;
  const value = toBigInt(addr.toByteArray());
  const hostBits = BigInt(bits - len);
  const first = (value >> hostBits) << hostBits;
  if (first !== value) {
    const network = fromBigInt(first, family);
    return { ok: false, reason: `"${text}" has host bits set; did you mean ${network}/${len}?` };
  }
  return { ok: true, cidr: { text, family, first, last: first + (1n << hostBits) - 1n } };
}

/** `addr` as a host route: /32 for IPv4, /128 for IPv6. */
export function hostCidr(addr: string): string {
  return `${addr}/${addr.includes(':') ? 128 : 32}`;
}

export function parseIp(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  return ipaddr.isValid(text) && /^[0-9a-fA-F.:]+$/.test(text) ? ipaddr.parse(text) : undefined;
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && a.first <= b.last && b.first <= a.last;
}

/**
 * All pairs (earlier, later) of overlapping ranges, found with one sort and a sweep:
 * O(n log n + overlaps) instead of comparing every pair (1,000 regions would be 10^6 pairs).
 * Each range is reported against the range with the widest reach seen before it.
 */
export function findOverlaps<T extends { cidr: Cidr }>(items: readonly T[]): [T, T][] {
  const sorted = [...items].sort(
    (a, b) => a.cidr.family - b.cidr.family || (a.cidr.first < b.cidr.first ? -1 : a.cidr.first > b.cidr.first ? 1 : 0),
  );
  const out: [T, T][] = [];
  let reach: T | undefined;
  for (const item of sorted) {
    if (reach && reach.cidr.family === item.cidr.family && item.cidr.first <= reach.cidr.last) out.push([reach, item]);
    if (!reach || reach.cidr.family !== item.cidr.family || item.cidr.last > reach.cidr.last) reach = item;
  }
  return out;
}

function toBigInt(bytes: number[]): bigint {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

function fromBigInt(v: bigint, family: 4 | 6): string {
  const n = family === 4 ? 4 : 16;
  const bytes: number[] = [];
  for (let i = n - 1; i >= 0; i--) bytes.push(Number((v >> BigInt(i * 8)) & 0xffn));
  return ipaddr.fromByteArray(bytes).toString();
}

/**
 * Why a range may never be routed across regions, or null when it may. Shared by the compiler
 * (pod CIDRs in a topology) and the runtime (subnets read from Gateway status): a default route,
 * or a range covering loopback, link-local, multicast or the unspecified address, would take over
 * traffic that is not a remote region's. Prefixes shorter than /8 (IPv4) or /16 (IPv6) are refused
 * too: no region's pods need a quarter of the address space, and `0.0.0.0/1` plus `128.0.0.0/1`
 * is a default route in two halves.
 */
export function unroutableReason(cidr: Cidr): string | null {
  const bits = cidr.family === 4 ? 32 : 128;
  const len = bits - bitLength(cidr.last - cidr.first + 1n) + 1;
  const min = cidr.family === 4 ? 8 : 16;
  if (len < min) return `${cidr.text} is wider than /${min}: it would capture traffic for most of the ${cidr.family === 4 ? 'IPv4' : 'IPv6'} address space`;
  for (const r of RESERVED[cidr.family]) {
    if (overlaps(cidr, r.cidr)) return `${cidr.text} overlaps ${r.cidr.text} (${r.what}), which is never routed to another region`;
  }
  return null;
}

const reserved = (text: string, what: string): { cidr: Cidr; what: string } => {
  const p = parseCidr(text);
  if (!p.ok) throw new Error(`bad reserved range ${text}`);
  return { cidr: p.cidr, what };
};

const RESERVED: Readonly<Record<4 | 6, readonly { cidr: Cidr; what: string }[]>> = {
  4: [
    reserved('0.0.0.0/8', 'this-network addresses'),
    reserved('127.0.0.0/8', 'loopback'),
    reserved('169.254.0.0/16', 'link-local'),
    reserved('224.0.0.0/4', 'multicast'),
    reserved('240.0.0.0/4', 'reserved and broadcast'),
  ],
  6: [
    reserved('::/128', 'the unspecified address'),
    reserved('::1/128', 'loopback'),
    reserved('::ffff:0:0/96', 'IPv4-mapped addresses'),
    reserved('fe80::/10', 'link-local'),
    reserved('ff00::/8', 'multicast'),
  ],
};

function bitLength(v: bigint): number {
  return v.toString(2).length;
}
