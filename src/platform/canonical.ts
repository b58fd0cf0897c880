/**
 * Parsers for values the runtime reads from the cluster: Node addresses and pod ranges, Calico
 * blocks, annotations, Gateway status, heartbeat health. A node writes its own addresses and the
 * API does not check them, so every such value is hostile until it passed through one of these.
 * Each returns the value in canonical form (the form it is rendered in) or the reason it was
 * refused; nothing that did not parse may reach a command line, a batch line, a config file or a
 * header.
 */
import ipaddr from 'ipaddr.js';
import { parseCidr, unroutableReason } from './cidr.js';

export type Parsed<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const no = (reason: string): Parsed<never> => ({ ok: false, reason });

/** Kubernetes object names (DNS-1123 subdomains), which is what node and Gateway names are. */
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** A WireGuard key: 32 bytes in standard base64 (the last character before `=` carries 4 bits). */
const WG_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/;
/** Address ranges a node address, next hop or endpoint can never be in. */
const UNUSABLE_RANGES = new Set(['unspecified', 'loopback', 'multicast', 'linkLocal', 'broadcast', 'ipv4Mapped']);

/** Text shown in logs and reasons: quoted, escaped and bounded, so hostile input cannot forge lines. */
export function shown(v: unknown, max = 80): string {
  const text = typeof v === 'string' ? v : String(v);
  const q = JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
  return q;
}

/**
 * A unicast IPv4 address in dotted-quad form (no octal, hex or short forms: `203.0.113.010` is
 * refused, not read as .8), or an IPv6 address without zone; rendered canonically (RFC 5952).
 */
export function canonicalIP(v: unknown): Parsed<string> {
  if (typeof v !== 'string' || v.length === 0 || v.length > 45) return no(`${shown(v)} is not an IP address`);
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  if (ipaddr.IPv4.isValidFourPartDecimal(v)) addr = ipaddr.IPv4.parse(v);
  else if (v.includes(':') && /^[0-9a-fA-F:.]+$/.test(v) && ipaddr.IPv6.isValid(v)) addr = ipaddr.IPv6.parse(v);
  else return no(`${shown(v)} is not an IP address in canonical form`);
  if (UNUSABLE_RANGES.has(addr.range())) return no(`${shown(v)} is a ${addr.range()} address`);
  return ok(addr.toString());
}

/**
 * A range that may be routed to another region: a CIDR without host bits, not a default route or
 * one of its halves, not loopback, link-local or multicast (`unroutableReason`). A bare address is
 * not a range: Kubernetes writes pod CIDRs with their length.
 */
export function canonicalSubnet(v: unknown): Parsed<string> {
  if (typeof v !== 'string' || v.length > 49) return no(`${shown(v)} is not a CIDR`);
  const m = /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(v);
  if (!m) return no(`${shown(v)} is not a CIDR`);
  const addr = m[1]!;
  const strict = addr.includes(':') ? ipaddr.IPv6.isValid(addr) : ipaddr.IPv4.isValidFourPartDecimal(addr);
  if (!strict) return no(`${shown(v)} is not a CIDR in canonical form`);
  const p = parseCidr(v);
  if (!p.ok) return no(p.reason);
  const why = unroutableReason(p.cidr);
  if (why) return no(why);
  const [base, len] = ipaddr.parseCIDR(v);
  return ok(`${base.toString()}/${len}`);
}

/**
 * A tunnel endpoint exactly as the plan renders it from parsed values: `203.0.113.10:4500` or
 * `[2001:db8::1]:4500`, with the address canonical (`203.0.113.010:4500` is refused, not read as .8).
 */
export function canonicalEndpoint(v: unknown): Parsed<{ readonly host: string; readonly port: number }> {
  const m = typeof v === 'string' ? (/^\[([0-9a-f:.]+)\]:(\d{1,5})$/.exec(v) ?? /^([0-9.]+):(\d{1,5})$/.exec(v)) : null;
  const ip = m ? canonicalIP(m[1]) : undefined;
  const port = Number(m?.[2]);
  if (!m || !ip?.ok || ip.value !== m[1] || !(port >= 1 && port <= 65535) || String(port) !== m[2]) return no(`${shown(v)} is not ip:port`);
  return ok({ host: ip.value, port });
}

export function canonicalPort(v: unknown): Parsed<number> {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535 ? ok(v) : no(`${shown(v)} is not a port (1-65535)`);
}

/** A Kubernetes object name: node, Gateway, Lease. */
export function objectName(v: unknown): Parsed<string> {
  return typeof v === 'string' && v.length <= 253 && DNS_SUBDOMAIN.test(v) ? ok(v) : no(`${shown(v)} is not a Kubernetes object name (DNS-1123 subdomain)`);
}

export function wireGuardKey(v: unknown): Parsed<string> {
  return typeof v === 'string' && WG_KEY.test(v) ? ok(v) : no(`${shown(v, 60)} is not a WireGuard public key (32 bytes, base64)`);
}

export function isWireGuardKey(v: unknown): v is string {
  return typeof v === 'string' && WG_KEY.test(v);
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** One refused value: where it was, and why. Counted in metrics by `kind`, logged with the rest. */
export interface Dropped {
  /** The object it came from (`gw-hangzhou`, `node/hz-1`, `lease/raven-agent-hz-1`). */
  readonly source: string;
  /** What kind of value: `node-ip`, `subnet`, `public-ip`, `port`, `public-key`, ... */
  readonly kind: string;
  readonly reason: string;
}

/** Sorted and deduplicated, so equal inputs give equal lists (and logs of changes only). */
export function sortDropped(items: readonly Dropped[]): Dropped[] {
  const key = (d: Dropped): string => `${d.source}\0${d.kind}\0${d.reason}`;
  const seen = new Map(items.map((d) => [key(d), d]));
  return [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, d]) => d);
}

/** Counts per kind, for a gauge. */
export function countByKind(items: readonly Dropped[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const d of items) out.set(d.kind, (out.get(d.kind) ?? 0) + 1);
  return out;
}
