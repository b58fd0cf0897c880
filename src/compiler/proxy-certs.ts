/**
 * Certificates for the proxy: throwaway CAs for the lab and tests, and the tunnel CA and its
 * certificates for a cluster's Secrets (`raven certs`, with `standIns: false`):
 *
 * - the tunnel CA (`ca.crt`), a server certificate with the given subject alternative names
 *   (`server.crt`), and one client certificate per edge region's Gateway (`client-<gw>.crt`,
 *   CN and DNS SAN `gw-<region>`, which the hub checks against what the client announces);
 * - unless `standIns` is false (a cluster has the real ones): the HTTPS front's client CA
 *   (`client-ca.crt`, standing in for kube-apiserver's kubelet-client CA) and one client of it
 *   (`kubelet-client.crt`, CN kube-apiserver-kubelet-client); the node CA (`node-ca.crt`, standing
 *   in for the cluster CA that signs kubelet serving certificates) and a serving certificate per
 *   node given (`node-<name>.crt`, SAN DNS:<name>).
 *
 * Made with the openssl command (argument arrays only); keys are written 0600.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`failed to run openssl ${args[0]}`, { cause: new Error(r.stderr.trim() || r.error?.message) });
}

function ca(dir: string, name: string, cn: string, days: number): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.crt`), '-days', String(days), '-subj', `/CN=${cn}`]);
  chmodSync(join(dir, `${name}.key`), 0o600);
}

function leaf(dir: string, signer: string, name: string, cn: string, ext: string, days: number): void {
  const key = join(dir, `${name}.key`);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', join(dir, `${name}.csr`), '-subj', `/CN=${cn}`]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(['x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', join(dir, `${signer}.crt`), '-CAkey', join(dir, `${signer}.key`), '-CAcreateserial', '-days', String(days), '-out', join(dir, `${name}.crt`), '-extfile', join(dir, `${name}.ext`)]);
  chmodSync(key, 0o600);
  rmSync(join(dir, `${name}.csr`));
  rmSync(join(dir, `${name}.ext`));
}

export interface ProxyCertsOptions {
  readonly serverNames: readonly string[];
  readonly serverIPs: readonly string[];
  /** Gateways that run proxy clients (edge regions): one client certificate each. */
  readonly gateways: readonly string[];
  /** Nodes that get a serving certificate of the node CA (HTTPS kubelets in tests). @default [] */
  readonly nodes?: readonly string[];
  /** Validity of every CA and certificate, in days. @default 30 */
  readonly days?: number;
  /** Make the stand-ins for the cluster's CAs (front client CA, node CA) too. @default true */
  readonly standIns?: boolean;
}

/** Writes the CAs and certificates listed above into `dir`. */
export function makeProxyCerts(dir: string, o: ProxyCertsOptions): void {
  const days = o.days ?? 30;
  if (!Number.isInteger(days) || days < 1) throw new Error(`failed to make proxy certificates: validity must be a whole number of days, not ${days}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  ca(dir, 'ca', 'raven-proxy-ca', days);
  const sans = [...o.serverNames.map((n) => `DNS:${n}`), ...o.serverIPs.map((ip) => `IP:${ip}`)].join(',');
  leaf(dir, 'ca', 'server', 'raven-proxy-server', `${sans ? `subjectAltName=${sans}\n` : ''}extendedKeyUsage=serverAuth\n`, days);
  for (const gw of o.gateways) leaf(dir, 'ca', `client-${gw}`, gw, `subjectAltName=DNS:${gw}\nextendedKeyUsage=clientAuth\n`, days);
  if (o.standIns === false) return;
  ca(dir, 'client-ca', 'raven-lab-kubelet-client-ca', days);
  leaf(dir, 'client-ca', 'kubelet-client', 'kube-apiserver-kubelet-client', 'extendedKeyUsage=clientAuth\n', days);
  ca(dir, 'node-ca', 'raven-lab-node-ca', days);
  for (const n of o.nodes ?? []) leaf(dir, 'node-ca', `node-${n}`, n, `subjectAltName=DNS:${n}\nextendedKeyUsage=serverAuth\n`, days);
}
