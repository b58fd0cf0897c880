/**
 * Certificates for the proxy's mutual TLS where no Secret provides them (the lab, tests): a CA, a
 * server certificate with the given subject alternative names, and one client certificate per
 * Gateway (CN = the Gateway's name, which the server checks against what the client announces).
 * Made with the openssl command (argument arrays only); keys are written 0600.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr.trim() || r.error?.message}`);
}

function leaf(dir: string, name: string, cn: string, ext: string): void {
  const key = join(dir, `${name}.key`);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', join(dir, `${name}.csr`), '-subj', `/CN=${cn}`]);
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(['x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-days', '30', '-out', join(dir, `${name}.crt`), '-extfile', join(dir, `${name}.ext`)]);
  chmodSync(key, 0o600);
  rmSync(join(dir, `${name}.csr`));
  rmSync(join(dir, `${name}.ext`));
}

/** Writes ca.crt, server.{crt,key} and client-<gateway>.{crt,key} into `dir`. */
export function makeProxyCerts(dir: string, o: { serverNames: readonly string[]; serverIPs: readonly string[]; gateways: readonly string[] }): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-days', '30', '-subj', '/CN=raven-proxy-ca']);
  chmodSync(join(dir, 'ca.key'), 0o600);
  const sans = [...o.serverNames.map((n) => `DNS:${n}`), ...o.serverIPs.map((ip) => `IP:${ip}`)].join(',');
  leaf(dir, 'server', 'raven-proxy-server', `${sans ? `subjectAltName=${sans}\n` : ''}extendedKeyUsage=serverAuth\n`);
  for (const gw of o.gateways) leaf(dir, `client-${gw}`, gw, 'extendedKeyUsage=clientAuth\n');
}
