/**
 * `raven certs`: the Secrets a cluster needs that must never be in git or dist/, made for one
 * compiled topology. Which Secrets, their names, keys and namespace are read from the compiled
 * objects, so they are exactly what the agent DaemonSets mount:
 *
 * - the IPsec PSK Secret (ipsec only): the one key the gateway DaemonSets' `ipsec-psk` volume
 *   projects to `/etc/raven/ipsec/psk`; 32 random bytes in hex, or the content of `--psk-file`;
 * - with `l7Proxy`, one `raven-proxy-<region>` per region whose gateway DaemonSet mounts it, from a
 *   new tunnel CA (`makeProxyCerts`): exposed regions (proxy servers) `ca.crt`, `server.crt`,
 *   `server.key`, `client-ca.crt` (kube-apiserver's kubelet client CA, `--client-ca`) and
 *   `node-ca.crt` (the cluster CA, `--node-ca`); other regions `ca.crt`, `client.crt` and
 *   `client.key` with CN gw-<region>, so no node holds another region's key.
 *
 * `planSecrets` is pure; `makeSecrets` runs openssl (argument arrays only) in a private temporary
 * directory it removes; `writeSecrets` refuses directories inside dist/ or a git work tree.
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { KubernetesObject } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import type { FileTree } from './bundle.js';
import { toYaml } from './bundle.js';
import { pskSecretRef } from './agent-mounts.js';
import { canonicalIP } from '../platform/canonical.js';
import { PROXY_SERVICE_NAME } from '../contract/names.js';
import type { GatewayEndpoint } from '../contract/gateway.js';
import { CERT_FILES } from '../contract/proxy-config.js';
import { makeProxyCerts } from './proxy-certs.js';
import { PROXY_CERTS_VOLUME, PSK_VOLUME, REGION_LABEL } from '../contract/names.js';
import { dnsSubdomainProblem } from '../topology/k8s-names.js';
import type { Topology } from '../topology/model.js';
import { acceptsDials } from '../topology/mesh.js';

/** A compiled object, as much of it as this module reads. */
export interface CompiledObject {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: { readonly name?: string; readonly namespace?: string; readonly labels?: Record<string, string> };
  readonly spec?: any;
}

export interface SecretObject {
  readonly apiVersion: 'v1';
  readonly kind: 'Secret';
  readonly metadata: { readonly name: string; readonly namespace: string; readonly labels: Record<string, string> };
  readonly type: 'Opaque';
  /** Key → base64 of the value. */
  readonly data: Record<string, string>;
}

export interface ProxySecretPlan {
  readonly region: string;
  readonly gateway: string;
  readonly secretName: string;
  /** `server` in exposed regions (they run the proxy server), `client` elsewhere. */
  readonly role: 'server' | 'client';
}

export interface SecretsPlan {
  readonly cluster: string;
  readonly namespace: string;
  readonly psk?: { readonly name: string; readonly key: string };
  readonly proxy: readonly ProxySecretPlan[];
  /** SANs of the one server certificate: exposed endpoints' node names and public IPs, the proxy Service's DNS names. */
  readonly serverNames: readonly string[];
  readonly serverIPs: readonly string[];
  /** Exposed regions whose public address is not in the topology (LoadBalancer): add it with --server-san. */
  readonly addressUnknown: readonly string[];
}

/** The synced objects of one cluster (crds, runtime, gateways) from `compile()`'s file tree. */
export function clusterObjects(files: FileTree, cluster: string): CompiledObject[] {
  return [...files.entries()]
    .filter(([path]) => path.startsWith(`${cluster}/`) && /\/(crds|runtime|gateways)\//.test(path) && !path.endsWith('/kustomization.yaml'))
    .flatMap(([, text]) => parseAllDocuments(text).map((d) => d.toJS() as CompiledObject));
}

/** Which Secrets the compiled DaemonSets mount, and what goes into them. Pure. */
export function planSecrets(t: Topology, objects: readonly CompiledObject[]): SecretsPlan {
  const sets = objects.filter((o) => o.kind === 'DaemonSet');
  const namespace = sets[0]?.metadata?.namespace;
  if (!namespace) throw new Error(`failed to plan the Secrets of cluster ${t.cluster}: the compiled output has no agent DaemonSet`);
  const mountsPsk = sets.some((ds) => ds.spec?.template?.spec?.volumes?.some((v: { name?: string }) => v.name === PSK_VOLUME));
  const psk = mountsPsk ? pskSecretRef(objects as readonly KubernetesObject[]) : undefined;

  const gateways = objects.filter((o) => o.kind === 'Gateway');
  const gatewayOf = new Map(gateways.map((g) => [g.metadata?.labels?.[REGION_LABEL] ?? '', g]));
  const proxy: ProxySecretPlan[] = [];
  for (const ds of sets) {
    const secret = ds.spec?.template?.spec?.volumes?.find((v: { name?: string }) => v.name === PROXY_CERTS_VOLUME)?.secret?.secretName as string | undefined;
    if (!secret) continue;
    const region = ds.spec?.selector?.matchLabels?.[REGION_LABEL] as string | undefined;
    const gw = region === undefined ? undefined : gatewayOf.get(region);
    if (!region || !gw?.metadata?.name) throw new Error(`failed to plan the proxy Secret ${secret}: DaemonSet ${ds.metadata?.name} names no region with a Gateway`);
    proxy.push({ region, gateway: gw.metadata.name, secretName: secret, role: acceptsDials(gw.spec?.exposeType, (gw.spec?.endpoints as GatewayEndpoint[] | undefined)?.find((e) => e.type === 'proxy')) ? 'server' : 'client' });
  }
  proxy.sort((a, b) => (a.secretName < b.secretName ? -1 : 1));

  const names = new Set<string>();
  const ips = new Set<string>();
  const addressUnknown: string[] = [];
  for (const p of proxy.filter((x) => x.role === 'server')) {
    const gw = gatewayOf.get(p.region)!;
    const endpoints = ((gw.spec?.endpoints ?? []) as { nodeName?: string; publicIP?: string }[]);
    for (const e of endpoints) {
      if (e.nodeName) names.add(e.nodeName);
      if (e.publicIP) ips.add(e.publicIP);
    }
    if (!endpoints.some((e) => e.publicIP)) addressUnknown.push(p.region);
  }
  if (proxy.some((x) => x.role === 'server') && objects.some((o) => o.kind === 'Service' && o.metadata?.name === PROXY_SERVICE_NAME)) {
    for (const n of [PROXY_SERVICE_NAME, `${PROXY_SERVICE_NAME}.${namespace}`, `${PROXY_SERVICE_NAME}.${namespace}.svc`, `${PROXY_SERVICE_NAME}.${namespace}.svc.cluster.local`]) names.add(n);
  }
  return {
    cluster: t.cluster,
    namespace,
    ...(psk && { psk }),
    proxy,
    serverNames: [...names].sort(),
    serverIPs: [...ips].sort(),
    addressUnknown: addressUnknown.sort(),
  };
}

export interface SecretInputs {
  /** The PSK to use (an existing one); generated when absent. */
  readonly psk?: string;
  /** PEM of kube-apiserver's kubelet client CA: `client-ca.crt` of exposed regions. */
  readonly clientCA?: string;
  /** PEM of the cluster CA, which signs kubelet serving certificates: `node-ca.crt` of exposed regions. */
  readonly nodeCA?: string;
  /** More SANs of the server certificate: IP addresses or DNS names. @default [] */
  readonly extraSans?: readonly string[];
  /** Validity of the tunnel CA and its certificates. @default 365 */
  readonly days?: number;
  /** @default crypto.randomBytes */
  readonly random?: (n: number) => Buffer;
}

/** The flag each missing input is given with, and why it is needed; [] when nothing is missing. Pure. */
export function missingInputs(plan: SecretsPlan, inputs: Pick<SecretInputs, 'clientCA' | 'nodeCA'>): string[] {
  const servers = plan.proxy.filter((p) => p.role === 'server').map((p) => p.region);
  if (servers.length === 0) return [];
  const where = `region${servers.length === 1 ? '' : 's'} ${servers.join(', ')} ${servers.length === 1 ? 'is' : 'are'} exposed and serve${servers.length === 1 ? 's' : ''} the L7 proxy's HTTPS front`;
  return [
    ...(inputs.clientCA === undefined ? [`--client-ca FILE is required: ${where}, whose clients (kube-apiserver) are checked against the CA of kube-apiserver's --kubelet-client-certificate (kubeadm: /etc/kubernetes/pki/ca.crt)`] : []),
    ...(inputs.nodeCA === undefined ? [`--node-ca FILE is required: ${where}, which verifies kubelets' serving certificates against the cluster CA (kubeadm: /etc/kubernetes/pki/ca.crt)`] : []),
  ];
}

/** A SAN given on the command line, as `DNS:`-less name or canonical IP; the reason when it is neither. */
export function parseSan(v: string): { ip: string } | { name: string } | { problem: string } {
  const ip = canonicalIP(v);
  if (ip.ok) return { ip: ip.value };
  if (/^[0-9.:]+$/.test(v)) return { problem: ip.reason };
  const problem = dnsSubdomainProblem(v);
  return problem ? { problem: `${JSON.stringify(v)} is neither an IP address nor a DNS name: ${problem}` } : { name: v };
}

/**
 * The PSK as a file holds it: less one trailing newline (as the agent reads it), not empty, and
 * printable (it ends up in swanctl.conf as hex, but a control character is a copy-and-paste accident).
 */
export function pskFromFile(text: string, file: string): string {
  const psk = text.replace(/\r?\n$/, '');
  if (!psk) throw new Error(`failed to read the PSK from ${file}: the file is empty`);
  if (/[\u0000-\u001f\u007f]/.test(psk)) throw new Error(`failed to read the PSK from ${file}: it holds a control character or several lines; give the PSK alone, on one line`);
  return psk;
}

/** The PSK in `file` (`--psk-file`), checked as `pskFromFile` does. */
export function readPsk(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`failed to read --psk-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return pskFromFile(text, file);
}

/** Checks that a file given as a CA is a PEM certificate, and returns its text. */
export function readCA(file: string, flag: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`failed to read ${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const r = spawnSync('openssl', ['x509', '-noout', '-in', file], { encoding: 'utf8' });
  if (r.status !== 0 || !text.includes('-----BEGIN CERTIFICATE-----')) throw new Error(`failed to read ${flag} ${file}: not a PEM certificate (${(r.stderr || r.error?.message || '').trim().split('\n')[0]})`);
  return text;
}

const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');

/** Makes every planned Secret: a new PSK unless one is given, a new tunnel CA and its certificates. */
export function makeSecrets(plan: SecretsPlan, inputs: SecretInputs): SecretObject[] {
  const missing = missingInputs(plan, inputs);
  if (missing.length) throw new Error(missing.join('; '));
  const labels = (extra: Record<string, string> = {}): Record<string, string> => ({ 'app.kubernetes.io/part-of': 'raven-gitops', 'raven-gitops.io/cluster': plan.cluster, ...extra });
  const out: SecretObject[] = [];
  if (plan.psk) {
    const psk = inputs.psk ?? (inputs.random ?? randomBytes)(32).toString('hex');
    out.push({ apiVersion: 'v1', kind: 'Secret', metadata: { name: plan.psk.name, namespace: plan.namespace, labels: labels() }, type: 'Opaque', data: { [plan.psk.key]: b64(psk) } });
  }
  if (plan.proxy.length === 0) return out;

  const names = new Set(plan.serverNames);
  const ips = new Set(plan.serverIPs);
  for (const s of inputs.extraSans ?? []) {
    const san = parseSan(s);
    if ('problem' in san) throw new Error(`failed to add the server name ${JSON.stringify(s)}: ${san.problem}`);
    if ('ip' in san) ips.add(san.ip);
    else names.add(san.name);
  }
  const dir = mkdtempSync(join(tmpdir(), 'raven-certs-'));
  try {
    const certs = join(dir, 'certs');
    const clients = plan.proxy.filter((p) => p.role === 'client').map((p) => p.gateway);
    makeProxyCerts(certs, { serverNames: [...names].sort(), serverIPs: [...ips].sort(), gateways: clients, days: inputs.days ?? 365, standIns: false });
    const file = (name: string): Buffer => readFileSync(join(certs, name));
    for (const p of plan.proxy) {
      const data: Record<string, string> =
        p.role === 'server'
          ? {
              [CERT_FILES.tunnelCA]: b64(file('ca.crt')),
              [CERT_FILES.serverCert]: b64(file('server.crt')),
              [CERT_FILES.serverKey]: b64(file('server.key')),
              [CERT_FILES.frontClientCA]: b64(inputs.clientCA!),
              [CERT_FILES.nodeCA]: b64(inputs.nodeCA!),
            }
          : {
              [CERT_FILES.tunnelCA]: b64(file('ca.crt')),
              [CERT_FILES.clientCert]: b64(file(`client-${p.gateway}.crt`)),
              [CERT_FILES.clientKey]: b64(file(`client-${p.gateway}.key`)),
            };
      const sorted = Object.fromEntries(Object.entries(data).sort(([a], [b]) => (a < b ? -1 : 1)));
      out.push({ apiVersion: 'v1', kind: 'Secret', metadata: { name: p.secretName, namespace: plan.namespace, labels: labels({ [REGION_LABEL]: p.region }) }, type: 'Opaque', data: sorted });
    }
  } finally {
    // The tunnel CA's key goes with it: re-running makes a new CA and every proxy Secret anew.
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

/** The Secrets as one YAML stream, for `kubectl apply -f -`. */
export function renderSecrets(secrets: readonly SecretObject[], source: string): string {
  const head = `# Secrets of cluster ${secrets[0]?.metadata.labels['raven-gitops.io/cluster'] ?? ''} from ${source}, made by raven certs.\n# Apply them (kubectl apply -f -); never commit them.\n`;
  return head + secrets.map((s) => `---\n${toYaml(s)}`).join('');
}

/**
 * Why `dir` must not receive Secrets, or null: inside a directory named dist (the compiler's
 * output, synced from git) or inside a git work tree. Checked on the real path of the nearest
 * existing ancestor, so a symlink cannot smuggle the files in.
 */
export function outDirProblem(dir: string): string | null {
  let existing = resolve(dir);
  while (!existsSync(existing)) existing = dirname(existing);
  const tail = resolve(dir).slice(existing.length);
  const real = join(realpathSync(existing), tail);
  for (let d = real; ; d = dirname(d)) {
    if (basename(d) === 'dist') return `${dir} is inside ${d}, the compiled output that is committed and synced: Secrets there would end up in git`;
    if (existsSync(join(d, '.git'))) return `${dir} is inside the git work tree ${d}: Secrets there are one \`git add\` away from being committed`;
    if (dirname(d) === d) return null;
  }
}

/** Writes each Secret to `dir/secret-<name>.yaml`, mode 0600 (the directory 0700); never replaces a file. */
export function writeSecrets(dir: string, secrets: readonly SecretObject[], source: string): string[] {
  const problem = outDirProblem(dir);
  if (problem) throw new Error(`refusing to write Secrets: ${problem}; choose a directory outside, or pipe to kubectl apply -f -`);
  const files = secrets.map((s) => join(dir, `secret-${s.metadata.name}.yaml`));
  const taken = files.filter((f) => existsSync(f));
  if (taken.length) throw new Error(`refusing to write Secrets: ${taken.join(', ')} already exist${taken.length === 1 ? 's' : ''}; remove ${taken.length === 1 ? 'it' : 'them'} or choose another --out`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  secrets.forEach((s, i) => writeFileSync(files[i]!, renderSecrets([s], source), { mode: 0o600, flag: 'wx' }));
  return files;
}
