/**
 * The agent's configuration, parsed once: flags, then environment (NODE_NAME, NODE_IP,
 * POD_NAMESPACE), then the files of the mounted `raven-agent-config` ConfigMap (--config-dir) and
 * the IPsec PSK file (--psk-file, mounted on gateway candidates only). Every bad value is reported
 * with what is allowed; the result is frozen.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import ipaddr from 'ipaddr.js';
import {
  AGENT_HEALTH_PORT,
  AGENT_METRICS_PORT,
  BACKEND_MAX_MTU,
  DEFAULT_PROXY_PORT,
  PROXY_CERT_DIR,
  PROXY_INTERNAL_INSECURE_PORT,
  PROXY_INTERNAL_SECURE_PORT,
  PROXY_METRICS_PORT,
  PSK_FILE,
} from './names.js';
import { parseAddr } from '../platform/http-endpoints.js';
import { shown } from '../platform/canonical.js';
import { CANDIDATE_LEASE_SECONDS, MAX_LEASE_SECONDS } from './heartbeat.js';
import type { Topology } from '../topology/model.js';

export interface AgentConfig {
  readonly nodeName: string;
  readonly nodeIP: string;
  readonly namespace: string;
  readonly kubeconfig?: string;
  readonly stateDir: string;
  readonly vpnDriver: 'wireguard' | 'ipsec';
  readonly vpnPort: number;
  readonly tunnelMTU: number;
  readonly underlayMTU: number;
  readonly forwardNodeIP: boolean;
  readonly metricsAddr: string;
  readonly healthAddr: string;
  /**
   * The IPsec PSK, read once from --psk-file: present on gateway candidates, whose DaemonSet mounts
   * the Secret; absent elsewhere (such a node never runs the tunnel). Never logged.
   */
  readonly psk?: string;
  /** Run the data plane inside this network namespace (the lab); absent in a cluster. */
  readonly netns?: string;
  /**
   * On SIGTERM, remove the routes, rules and tunnel this agent made (uninstall). By default they
   * stay for the next agent to adopt: a rolling update must not cut the region off.
   */
  readonly cleanupOnExit?: boolean;
  /**
   * A gateway candidate's heartbeat lease, in seconds; it renews every quarter of it
   * (contract/heartbeat.ts `RENEWALS_PER_LEASE`). @default CANDIDATE_LEASE_SECONDS
   */
  readonly leaseSeconds?: number;
  /** Tunnel device name. Unique per host with userspace WireGuard: its control sockets are global. */
  readonly device: string;
  /** L7 proxy: the mounted certificates, and the addresses of its listeners (Raven's ports). */
  readonly proxy: { readonly certDir: string; readonly tunnelAddr: string; readonly httpAddr: string; readonly httpsAddr: string; readonly metricsAddr: string };
  /**
   * Files in --config-dir that are no key of raven-agent-config (sorted; absent when none): from a
   * newer or older compiler, or a hand edit. Logged and otherwise ignored, so a rollout in either
   * order keeps agents running.
   */
  readonly ignoredKeys?: readonly string[];
}

export const AGENT_USAGE = `usage: raven agent [flags]
  --node-name NAME        this node (default: $NODE_NAME)
  --node-ip IP            this node's address (default: $NODE_IP)
  --namespace NS          raven namespace (default: $POD_NAMESPACE or raven-system)
  --kubeconfig FILE       kubeconfig (default: $KUBECONFIG, then in-cluster)
  --config-dir DIR        raven-agent-config files (vpn-driver, vpn-port, tunnel-mtu, ...)
  --state-dir DIR         keys that survive restarts (default /var/lib/raven)
  --netns NAME            run the data plane in this network namespace (lab)
  --cleanup-on-exit       on SIGTERM remove our routes, rules and tunnel (uninstall); by default they
                          stay, and the next agent adopts them (rolling updates cut nothing)
  --lease-seconds N       a gateway candidate's heartbeat lease, renewed every quarter of it
                          (default ${CANDIDATE_LEASE_SECONDS}, kubelet's; failover does not wait for it)
  --device NAME           tunnel device (default raven-wg0)
  --psk-file FILE         IPsec PSK, on gateway candidates (default ${PSK_FILE}; absent elsewhere)
  --proxy-cert-dir DIR    L7 proxy certificates: ca.crt, server.{crt,key}, client.{crt,key} (default /etc/raven/proxy)`;

/** The agent's ConfigMap, mounted as files in --config-dir (one file per key). */
export const AGENT_CONFIG = 'raven-agent-config';

/**
 * How one key is read: its raw value (the file's contents, trimmed) or undefined when the file is
 * absent, into a typed value; a bad value is reported in `errors` with what is allowed.
 */
type Read<T> = (key: string, raw: string | undefined, errors: string[]) => T;

/** One key of raven-agent-config: what the compiler writes from the topology, and how the agent reads it. */
interface ConfigKey<T> {
  readonly render: (t: Topology) => string;
  readonly read: Read<T>;
}

const key = <T>(render: (t: Topology) => string, read: Read<T>): ConfigKey<T> => ({ render, read });

const oneOf = <T extends string>(allowed: readonly T[], fallback: T): Read<T> => (k, raw, errors) => {
  const v = raw ?? fallback;
  if (!allowed.includes(v as T)) errors.push(`${k} "${v}" is not allowed; use one of: ${allowed.join(', ')}`);
  return v as T;
};

const int = (fallback: number, min: number, max: number): Read<number> => (k, raw, errors) => {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max) errors.push(`${k} "${raw}" must be an integer from ${min} to ${max}`);
  return n;
};

const bool: Read<boolean> = (k, raw, errors) => {
  const v = (raw ?? 'false').toLowerCase();
  if (v !== 'true' && v !== 'false') errors.push(`${k} "${raw}" must be true or false`);
  return v === 'true';
};

/** A listen address `[host]:port`; the agent's and the compiler's default is `:port` on every address. */
const addr = (port: number): ConfigKey<string> =>
  key(() => `:${port}`, (k, raw, errors) => {
    const v = raw ?? `:${port}`;
    try {
      parseAddr(v);
    } catch (err) {
      errors.push(`${k}: ${(err as Error).message}`);
    }
    return v;
  });

/**
 * Every key of raven-agent-config, once: `renderAgentConfig` writes exactly these (the compiler),
 * `parseAgentConfig` reads exactly these (the agent) and reports any other file as ignored. A key
 * the agent reads is a key the compiler writes; test/contract/round-trip.test.ts holds them to it.
 * Defaults only matter for a hand-written ConfigMap.
 */
export const AGENT_CONFIG_KEYS = {
  'vpn-driver': key((t) => t.vpn.backend, oneOf(['wireguard', 'ipsec'] as const, 'wireguard')),
  'vpn-port': key((t) => String(t.vpn.port), int(4500, 1, 65535)),
  /** 0 (only in a hand-written ConfigMap): underlay-mtu less the backend overhead. */
  'tunnel-mtu': key((t) => String(t.vpn.mtu), int(0, 0, BACKEND_MAX_MTU.wireguard)),
  'underlay-mtu': key((t) => String(t.vpn.underlayMTU), int(1500, 576, 9216)),
  'forward-node-ip': key((t) => String(t.forwardNodeIP), bool),
  'metric-bind-addr': addr(AGENT_METRICS_PORT),
  'health-probe-addr': addr(AGENT_HEALTH_PORT),
  'proxy-external-addr': addr(DEFAULT_PROXY_PORT),
  'proxy-internal-insecure-addr': addr(PROXY_INTERNAL_INSECURE_PORT),
  'proxy-internal-secure-addr': addr(PROXY_INTERNAL_SECURE_PORT),
  'proxy-metric-bind-addr': addr(PROXY_METRICS_PORT),
} as const satisfies Record<string, ConfigKey<unknown>>;

export type AgentConfigKey = keyof typeof AGENT_CONFIG_KEYS;
/** The keys, sorted. */
export const AGENT_CONFIG_KEY_NAMES: readonly AgentConfigKey[] = (Object.keys(AGENT_CONFIG_KEYS) as AgentConfigKey[]).sort();
const isAgentConfigKey = (k: string): k is AgentConfigKey => Object.hasOwn(AGENT_CONFIG_KEYS, k);

/** The typed value of every key. */
export type AgentConfigValues = { readonly [K in AgentConfigKey]: ReturnType<(typeof AGENT_CONFIG_KEYS)[K]['read']> };

/** The `data` of the raven-agent-config ConfigMap for a topology (the compiler). Pure. */
export function renderAgentConfig(t: Topology): Record<AgentConfigKey, string> {
  const out = {} as Record<AgentConfigKey, string>;
  for (const k of AGENT_CONFIG_KEY_NAMES) out[k] = AGENT_CONFIG_KEYS[k].render(t);
  return out;
}

/**
 * The mounted files (name → trimmed contents) into typed values (the agent). Files that are no key
 * of the table are returned in `ignored`, sorted: a key the compiler writes and the agent does not
 * read shows up there (and in the agent's log) instead of vanishing. Pure.
 */
export function readAgentConfigFiles(files: Readonly<Record<string, string>>): { readonly values: AgentConfigValues; readonly ignored: readonly string[]; readonly errors: readonly string[] } {
  const errors: string[] = [];
  const values: Record<string, unknown> = {};
  for (const k of AGENT_CONFIG_KEY_NAMES) values[k] = (AGENT_CONFIG_KEYS[k].read as Read<unknown>)(k, Object.hasOwn(files, k) ? files[k] : undefined, errors);
  const ignored = Object.keys(files).filter((k) => !isAgentConfigKey(k)).sort();
  return { values: values as AgentConfigValues, ignored, errors };
}

/**
 * `readSecret` returns a file's contents, or undefined when it does not exist; it is called once,
 * for --psk-file.
 */
export function parseAgentConfig(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  readDir: (dir: string) => Record<string, string> = readConfigDir,
  readSecret: (path: string) => string | undefined = readSecretFile,
): AgentConfig {
  const { values } = parseArgs({
    args: [...args],
    strict: true,
    options: {
      'node-name': { type: 'string' },
      'node-ip': { type: 'string' },
      namespace: { type: 'string' },
      kubeconfig: { type: 'string' },
      'config-dir': { type: 'string' },
      'state-dir': { type: 'string' },
      netns: { type: 'string' },
      device: { type: 'string' },
      'psk-file': { type: 'string' },
      'proxy-cert-dir': { type: 'string' },
      'cleanup-on-exit': { type: 'boolean' },
      'lease-seconds': { type: 'string' },
    },
  });
  const read = readAgentConfigFiles(values['config-dir'] ? readDir(values['config-dir']) : {});
  const file = read.values;
  const errors: string[] = [...read.errors];
  const need = (v: string | undefined, what: string): string => {
    if (!v) errors.push(`${what} is required`);
    return v ?? '';
  };

  const nodeName = need(values['node-name'] ?? env.NODE_NAME, '--node-name (or $NODE_NAME)');
  const nodeIP = need(values['node-ip'] ?? env.NODE_IP, '--node-ip (or $NODE_IP)');
  if (nodeIP && !ipaddr.isValid(nodeIP)) errors.push(`node IP "${nodeIP}" is not an IP address`);
  const vpnDriver = file['vpn-driver'];
  // The environment is no place for a secret: it stays readable in /proc/<pid>/environ and through
  // `kubectl exec ... env` for the life of the process. Refuse it rather than use it.
  if (env.VPN_CONNECTION_PSK !== undefined) errors.push('$VPN_CONNECTION_PSK is no longer read: mount the PSK Secret as a file and pass --psk-file (the compiled gateway DaemonSets do)');
  const leaseSeconds = values['lease-seconds'] === undefined ? undefined : Number(values['lease-seconds']);
  if (leaseSeconds !== undefined && !(Number.isInteger(leaseSeconds) && leaseSeconds >= 1 && leaseSeconds <= MAX_LEASE_SECONDS)) {
    errors.push(`--lease-seconds ${shown(values['lease-seconds']!)} is not a whole number of seconds from 1 to ${MAX_LEASE_SECONDS}`);
  }
  const psk = vpnDriver === 'ipsec' ? readPsk(values['psk-file'] ?? PSK_FILE, readSecret, errors) : undefined;
  const config: AgentConfig = {
    nodeName,
    nodeIP,
    namespace: values.namespace ?? env.POD_NAMESPACE ?? 'raven-system',
    ...(values.kubeconfig && { kubeconfig: values.kubeconfig }),
    stateDir: values['state-dir'] ?? '/var/lib/raven',
    vpnDriver,
    vpnPort: file['vpn-port'],
    tunnelMTU: file['tunnel-mtu'],
    underlayMTU: file['underlay-mtu'],
    forwardNodeIP: file['forward-node-ip'],
    metricsAddr: file['metric-bind-addr'],
    healthAddr: file['health-probe-addr'],
    ...(psk !== undefined && { psk }),
    ...(values.netns && { netns: values.netns }),
    ...(values['cleanup-on-exit'] && { cleanupOnExit: true }),
    ...(leaseSeconds !== undefined && { leaseSeconds }),
    device: values.device ?? 'raven-wg0',
    proxy: {
      certDir: values['proxy-cert-dir'] ?? PROXY_CERT_DIR,
      tunnelAddr: file['proxy-external-addr'],
      httpAddr: file['proxy-internal-insecure-addr'],
      httpsAddr: file['proxy-internal-secure-addr'],
      metricsAddr: file['proxy-metric-bind-addr'],
    },
    ...(read.ignored.length && { ignoredKeys: read.ignored }),
  };
  if (!/^[a-zA-Z0-9_.-]{1,15}$/.test(config.device)) errors.push(`device "${config.device}" must be 1-15 letters, digits, ".", "-" or "_"`);
  if (errors.length) throw new Error(`invalid agent configuration:\n  - ${errors.join('\n  - ')}`);
  return Object.freeze(config);
}

/**
 * The PSK as the Secret volume holds it, less one trailing newline (`kubectl create secret
 * --from-file` keeps the file's). Undefined when the file is absent: not a gateway candidate.
 */
function readPsk(path: string, readSecret: (path: string) => string | undefined, errors: string[]): string | undefined {
  let text: string | undefined;
  try {
    text = readSecret(path);
  } catch (err) {
    errors.push(`failed to read the PSK file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    return undefined;
  }
  if (text === undefined) return undefined;
  const psk = text.replace(/\r?\n$/, '');
  if (!psk) errors.push(`the PSK file ${path} is empty`);
  return psk || undefined;
}

function readSecretFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * The ConfigMap as mounted: one file per key (dot-files are the kubelet's bookkeeping). Only keys
 * of the table are read; any other file is listed with an empty value, so it is reported as ignored.
 */
export function readConfigDir(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue;
    out[name] = isAgentConfigKey(name) ? readFileSync(join(dir, name), 'utf8').trim() : '';
  }
  return out;
}
