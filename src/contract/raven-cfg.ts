/**
 * `raven-cfg`: the cluster's L3/L7 switches, as in OpenYurt. The compiler writes it
 * (`renderRavenCfg`), the controller reads it (`parseRavenCfg`) and stamps the switch of each
 * elected endpoint into that endpoint's `config` under the same key, where the agent reads it.
 * Raven's key names are kept.
 */
import type { Topology } from '../topology/model.js';

export const RAVEN_CFG = 'raven-cfg';

/** The switches, by the keys they have in raven-cfg and in an active endpoint's `config`. */
export const L3_TUNNEL_KEY = 'enable-l3-tunnel';
export const L7_PROXY_KEY = 'enable-l7-proxy';

export interface RavenSwitches {
  readonly l3Tunnel: boolean;
  readonly l7Proxy: boolean;
}

export function renderRavenCfg(t: Pick<Topology, 'l3Tunnel' | 'l7Proxy'>): Record<string, string> {
  return { [L3_TUNNEL_KEY]: String(t.l3Tunnel), [L7_PROXY_KEY]: String(t.l7Proxy) };
}

/** Tolerant: a missing ConfigMap, a missing key or anything but `true` (any case) is off. */
export function parseRavenCfg(data: Readonly<Record<string, string>> | undefined): RavenSwitches {
  const on = (k: string): boolean => (data?.[k] ?? '').toLowerCase() === 'true';
  return { l3Tunnel: on(L3_TUNNEL_KEY), l7Proxy: on(L7_PROXY_KEY) };
}
