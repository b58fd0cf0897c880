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
import { DEFAULT_PROXY_PORT, PROXY_CERT_DIR, PSK_FILE, PROXY_INTERNAL_INSECURE_PORT, PROXY_INTERNAL_SECURE_PORT, PROXY_METRICS_PORT } from './names.js';
import { parseAddr } from '../platform/http-endpoints.js';

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
  readonly natTraversal: boolean;
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
  /** Tunnel device name. Unique per host with userspace WireGuard: its control sockets are global. */
  readonly device: string;
  /** L7 proxy: the mounted certificates, and the addresses of its listeners (Raven's ports). */
  readonly proxy: { readonly certDir: string; readonly tunnelAddr: string; readonly httpAddr: string; readonly httpsAddr: string; readonly metricsAddr: string };
}

export const AGENT_USAGE = `usage: raven agent [flags]
  --node-name NAME        this node (default: $NODE_NAME)
  --node-ip IP            this node's address (default: $NODE_IP)
  --namespace NS          raven namespace (default: $POD_NAMESPACE or raven-system)
  --kubeconfig FILE       kubeconfig (default: $KUBECONFIG, then in-cluster)
  --config-dir DIR        raven-agent-config files (vpn-driver, vpn-port, tunnel-mtu, ...)
  --state-dir DIR         keys that survive restarts (default /var/lib/raven)
  --netns NAME            run the data plane in this network namespace (lab)
  --device NAME           tunnel device (default raven-wg0)
  --psk-file FILE         IPsec PSK, on gateway candidates (default ${PSK_FILE}; absent elsewhere)
  --proxy-cert-dir DIR    L7 proxy certificates: ca.crt, server.{crt,key}, client.{crt,key} (default /etc/raven/proxy)`;

/** Keys of raven-agent-config the agent reads (files in --config-dir). */
const FILE_KEYS = ['vpn-driver', 'vpn-port', 'tunnel-mtu', 'underlay-mtu', 'nat-traversal', 'forward-node-ip', 'metric-bind-addr', 'health-probe-addr', 'proxy-external-addr', 'proxy-internal-insecure-addr', 'proxy-internal-secure-addr', 'proxy-metric-bind-addr'] as const;

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
    },
  });
  const file = values['config-dir'] ? readDir(values['config-dir']) : {};
  const errors: string[] = [];
  const need = (v: string | undefined, what: string): string => {
    if (!v) errors.push(`${what} is required`);
    return v ?? '';
  };
  const oneOf = <T extends string>(key: string, allowed: readonly T[], fallback: T): T => {
    const v = file[key] ?? fallback;
    if (!allowed.includes(v as T)) errors.push(`${key} "${v}" is not allowed; use one of: ${allowed.join(', ')}`);
    return v as T;
  };
  const int = (key: string, fallback: number, min: number, max: number): number => {
    const raw = file[key];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!/^\d+$/.test(raw) || n < min || n > max) errors.push(`${key} "${raw}" must be an integer from ${min} to ${max}`);
    return n;
  };
  const bool = (key: string): boolean => {
    const raw = (file[key] ?? 'false').toLowerCase();
    if (raw !== 'true' && raw !== 'false') errors.push(`${key} "${file[key]}" must be true or false`);
    return raw === 'true';
  };
  const addr = (key: string, fallback: string): string => {
    const v = file[key] ?? fallback;
    try {
      parseAddr(v);
    } catch (err) {
      errors.push(`${key}: ${(err as Error).message}`);
    }
    return v;
  };

  const nodeName = need(values['node-name'] ?? env.NODE_NAME, '--node-name (or $NODE_NAME)');
  const nodeIP = need(values['node-ip'] ?? env.NODE_IP, '--node-ip (or $NODE_IP)');
  if (nodeIP && !ipaddr.isValid(nodeIP)) errors.push(`node IP "${nodeIP}" is not an IP address`);
  const vpnDriver = oneOf('vpn-driver', ['wireguard', 'ipsec'] as const, 'wireguard');
  // The environment is no place for a secret: it stays readable in /proc/<pid>/environ and through
  // `kubectl exec ... env` for the life of the process. Refuse it rather than use it.
  if (env.VPN_CONNECTION_PSK !== undefined) errors.push('$VPN_CONNECTION_PSK is no longer read: mount the PSK Secret as a file and pass --psk-file (the compiled gateway DaemonSets do)');
  const psk = vpnDriver === 'ipsec' ? readPsk(values['psk-file'] ?? PSK_FILE, readSecret, errors) : undefined;
  const config: AgentConfig = {
    nodeName,
    nodeIP,
    namespace: values.namespace ?? env.POD_NAMESPACE ?? 'raven-system',
    ...(values.kubeconfig && { kubeconfig: values.kubeconfig }),
    stateDir: values['state-dir'] ?? '/var/lib/raven',
    vpnDriver,
    vpnPort: int('vpn-port', 4500, 1, 65535),
    tunnelMTU: int('tunnel-mtu', 0, 0, 9000),
    underlayMTU: int('underlay-mtu', 1500, 576, 9216),
    natTraversal: bool('nat-traversal'),
    forwardNodeIP: bool('forward-node-ip'),
    metricsAddr: addr('metric-bind-addr', ':10265'),
    healthAddr: addr('health-probe-addr', ':10275'),
    ...(psk !== undefined && { psk }),
    ...(values.netns && { netns: values.netns }),
    device: values.device ?? 'raven-wg0',
    proxy: {
      certDir: values['proxy-cert-dir'] ?? PROXY_CERT_DIR,
      tunnelAddr: addr('proxy-external-addr', `:${DEFAULT_PROXY_PORT}`),
      httpAddr: addr('proxy-internal-insecure-addr', `:${PROXY_INTERNAL_INSECURE_PORT}`),
      httpsAddr: addr('proxy-internal-secure-addr', `:${PROXY_INTERNAL_SECURE_PORT}`),
      metricsAddr: addr('proxy-metric-bind-addr', `:${PROXY_METRICS_PORT}`),
    },
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

/** The ConfigMap as mounted: one file per key (dot-files are the kubelet's bookkeeping). */
function readConfigDir(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir)) {
    if (name.startsWith('.') || !(FILE_KEYS as readonly string[]).includes(name)) continue;
    out[name] = readFileSync(join(dir, name), 'utf8').trim();
  }
  return out;
}
