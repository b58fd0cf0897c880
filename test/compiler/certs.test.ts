/**
 * `raven certs`: the Secrets it makes are exactly the ones the compiled agent DaemonSets mount
 * (names, keys and namespace read from the compiled objects, never written down here), the
 * certificates verify and carry the identities the proxy checks, and nothing is written where it
 * could reach git. Every key and PSK is made at run time, under a temporary directory.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect as tlsConnect, createServer as tlsServer, type TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAllDocuments } from 'yaml';
import { main } from '../../src/cli.ts';
import { pskSecretRef } from '../../src/compiler/agent-mounts.ts';
import { PROXY_CERTS_VOLUME, PSK_VOLUME, REGION_LABEL } from '../../src/contract/names.ts';
import { type K8sObject, mustCompile, objectsOf } from '../support/support.ts';

const tmp = mkdtempSync(join(tmpdir(), 'raven-certs-test-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));

function openssl(args: string[], input?: string): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8', ...(input !== undefined && { input }) });
  return { status: r.status, out: r.stdout + r.stderr };
}

/** A stand-in for a cluster CA (kubelet client CA, cluster CA), made for this run. */
function clusterCA(name: string): string {
  const dir = join(tmp, name);
  mkdirSync(dir);
  const r = openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-days', '2', '-subj', `/CN=${name}`]);
  assert.is(r.status, 0, r.out);
  return join(dir, 'ca.crt');
}
const CLIENT_CA = clusterCA('test-kubelet-client-ca');
const NODE_CA = clusterCA('test-cluster-ca');
const CAS = ['--client-ca', CLIENT_CA, '--node-ca', NODE_CA];

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function certs(...args: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const code = await main(['certs', ...args], { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { code, stdout, stderr };
}

interface Secret {
  metadata: { name: string; namespace: string; labels: Record<string, string> };
  type: string;
  data: Record<string, string>;
}

function secretsOf(yaml: string): Secret[] {
  return parseAllDocuments(yaml).map((d) => d.toJS() as Secret).filter((s) => s !== null);
}
const decoded = (s: Secret, key: string): string => Buffer.from(s.data[key]!, 'base64').toString('utf8');

/** The compiled agent DaemonSets of a topology, and the Gateways. */
function compiled(file: string): { sets: K8sObject[]; gateways: K8sObject[]; objects: K8sObject[] } {
  const objects = objectsOf(mustCompile([file])).map((o) => o.obj);
  return { objects, sets: objects.filter((o) => o.kind === 'DaemonSet'), gateways: objects.filter((o) => o.kind === 'Gateway') };
}

/** Proxy Secret name → region, as the compiled DaemonSets mount them. */
function mountedProxySecrets(sets: readonly K8sObject[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const ds of sets) {
    const v = ds.spec.template.spec.volumes.find((x: any) => x.name === PROXY_CERTS_VOLUME);
    if (v) out.set(v.secret.secretName, ds.spec.selector.matchLabels[REGION_LABEL]);
  }
  return out;
}

function fileOf(s: Secret, key: string, dir: string): string {
  const p = join(dir, `${s.metadata.name}-${key}`);
  writeFileSync(p, decoded(s, key), { mode: 0o600 });
  return p;
}

const SOURCES = ['topologies/seed.yaml', 'topologies/retail-eu.yaml', 'test/fixtures/good/kube-system-lb.yaml'];

for (const file of SOURCES) {
  test(`${file}: one Secret per Secret the compiled DaemonSets mount, with the keys and namespace they read`, async () => {
    const { sets, gateways, objects } = compiled(file);
    const r = await certs(file, ...CAS);
    assert.is(r.code, 0, r.stderr);
    const secrets = secretsOf(r.stdout);
    const byName = new Map(secrets.map((s) => [s.metadata.name, s]));
    const proxy = mountedProxySecrets(sets);
    const mountsPsk = sets.some((ds) => ds.spec.template.spec.volumes.some((v: any) => v.name === PSK_VOLUME));
    const expected = [...(mountsPsk ? [pskSecretRef(objects).name] : []), ...proxy.keys()].sort();
    assert.equal(secrets.map((s) => s.metadata.name).sort(), expected);
    for (const s of secrets) {
      assert.is(s.metadata.namespace, sets[0]!.metadata.namespace, `${s.metadata.name}: namespace of the DaemonSets`);
      assert.is(s.type, 'Opaque');
    }
    if (mountsPsk) {
      const ref = pskSecretRef(objects);
      const psk = byName.get(ref.name)!;
      assert.equal(Object.keys(psk.data), [ref.key], 'the PSK Secret holds the one key the volume projects');
      assert.match(decoded(psk, ref.key), /^[0-9a-f]{64}$/, '32 random bytes, hex');
    }
    for (const [name, region] of proxy) {
      const gw = gateways.find((g) => g.metadata.labels?.[REGION_LABEL] === region)!;
      const exposed = ['PublicIP', 'LoadBalancer'].includes(gw.spec.exposeType);
      assert.equal(Object.keys(byName.get(name)!.data), exposed ? ['ca.crt', 'client-ca.crt', 'node-ca.crt', 'server.crt', 'server.key'] : ['ca.crt', 'client.crt', 'client.key'], name);
    }
  });
}

test('the proxy certificates verify against the tunnel CA, edge clients are CN gw-<region>, the cluster CAs are the files given', async () => {
  const r = await certs('topologies/retail-eu.yaml', ...CAS);
  assert.is(r.code, 0, r.stderr);
  const dir = join(tmp, 'verify');
  mkdirSync(dir);
  const secrets = secretsOf(r.stdout).filter((s) => s.metadata.name.startsWith('raven-proxy-'));
  const cas = new Set(secrets.map((s) => s.data['ca.crt']));
  assert.is(cas.size, 1, 'one tunnel CA for the whole cluster');
  let edges = 0;
  for (const s of secrets) {
    const ca = fileOf(s, 'ca.crt', dir);
    if (s.data['server.crt']) {
      const v = openssl(['verify', '-CAfile', ca, '-purpose', 'sslserver', fileOf(s, 'server.crt', dir)]);
      assert.is(v.status, 0, v.out);
      assert.is(decoded(s, 'client-ca.crt'), readFileSync(CLIENT_CA, 'utf8'));
      assert.is(decoded(s, 'node-ca.crt'), readFileSync(NODE_CA, 'utf8'));
    } else {
      edges++;
      const crt = fileOf(s, 'client.crt', dir);
      const v = openssl(['verify', '-CAfile', ca, '-purpose', 'sslclient', crt]);
      assert.is(v.status, 0, v.out);
      const subject = openssl(['x509', '-noout', '-subject', '-nameopt', 'RFC2253', '-in', crt]).out.trim();
      assert.is(subject, `subject=CN=gw-${s.metadata.labels[REGION_LABEL]}`, s.metadata.name);
      const pub = (args: string[]): string => openssl(args).out;
      assert.is(pub(['pkey', '-pubout', '-in', fileOf(s, 'client.key', dir)]), pub(['x509', '-noout', '-pubkey', '-in', crt]), `${s.metadata.name}: the key is the certificate's`);
    }
  }
  assert.ok(edges >= 3, 'the NATed stores get client pairs');
});

test('an edge client completes mutual TLS with the cloud server by node name, and the server sees gw-<region>', async () => {
  const r = await certs('topologies/seed.yaml', ...CAS);
  assert.is(r.code, 0, r.stderr);
  const by = new Map(secretsOf(r.stdout).map((s) => [s.metadata.name, s]));
  const cloud = by.get('raven-proxy-cloud')!;
  const edge = by.get('raven-proxy-hangzhou')!;
  const server = tlsServer({ cert: decoded(cloud, 'server.crt'), key: decoded(cloud, 'server.key'), ca: decoded(cloud, 'ca.crt'), requestCert: true, rejectUnauthorized: true }, (s) => {
    s.end(((s as TLSSocket).getPeerCertificate().subject as { CN?: string }).CN ?? '');
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as { port: number }).port;
  try {
    const seen = await new Promise<string>((res, rej) => {
      const c = tlsConnect({ host: '127.0.0.1', port, servername: 'cloud-gw-1', ca: decoded(edge, 'ca.crt'), cert: decoded(edge, 'client.crt'), key: decoded(edge, 'client.key') });
      let got = '';
      c.on('data', (d) => (got += d));
      c.on('end', () => res(got));
      c.on('error', rej);
    });
    assert.is(seen, 'gw-hangzhou');
    const sans = openssl(['x509', '-noout', '-ext', 'subjectAltName'], decoded(cloud, 'server.crt')).out;
    for (const san of ['DNS:cloud-gw-1', 'IP Address:203.0.113.10', 'DNS:x-raven-proxy-internal-svc.raven-system.svc']) assert.ok(sans.includes(san), `server SAN ${san} in ${sans}`);
  } finally {
    server.close();
  }
});

test('--psk-file keeps an existing PSK, less its trailing newline; --server-san adds a LoadBalancer address', async () => {
  const pskFile = join(tmp, 'psk');
  const psk = Buffer.from(Array.from({ length: 32 }, (_, i) => i * 7)).toString('base64');
  writeFileSync(pskFile, `${psk}\n`, { mode: 0o600 });
  const r = await certs('topologies/retail-eu.yaml', ...CAS, '--psk-file', pskFile, '--server-san', '198.51.100.77', '--server-san', 'proxy.retail.example');
  assert.is(r.code, 0, r.stderr);
  const ref = pskSecretRef(compiled('topologies/retail-eu.yaml').objects);
  const secrets = secretsOf(r.stdout);
  assert.is(decoded(secrets.find((s) => s.metadata.name === ref.name)!, ref.key), psk);
  const frankfurt = secrets.find((s) => s.metadata.name === 'raven-proxy-frankfurt')!;
  const sans = openssl(['x509', '-noout', '-ext', 'subjectAltName'], decoded(frankfurt, 'server.crt')).out;
  assert.ok(sans.includes('IP Address:198.51.100.77') && sans.includes('DNS:proxy.retail.example'), sans);
  assert.not.match(r.stderr, /LoadBalancer/, 'no warning once the address is given');

  const bad = await certs('topologies/retail-eu.yaml', ...CAS, '--server-san', 'not a name');
  assert.is(bad.code, 2);
  assert.is(bad.stdout, '');
  assert.match(bad.stderr, /--server-san not a name: "not a name" is neither an IP address nor a DNS name/);
});

test('without --client-ca or --node-ca, a cluster with an exposed proxy region gets an error naming the flag and no Secret', async () => {
  const noClient = await certs('topologies/seed.yaml', '--node-ca', NODE_CA);
  assert.is(noClient.code, 2);
  assert.is(noClient.stdout, '');
  assert.match(noClient.stderr, /--client-ca FILE is required: region cloud is exposed/);
  const noNode = await certs('topologies/seed.yaml', '--client-ca', CLIENT_CA);
  assert.is(noNode.code, 2);
  assert.match(noNode.stderr, /--node-ca FILE is required/);
  const notPem = await certs('topologies/seed.yaml', '--client-ca', join(tmp, 'psk'), '--node-ca', NODE_CA);
  assert.is(notPem.code, 1);
  assert.match(notPem.stderr, /--client-ca .*not a PEM certificate/);
});

test('an invalid topology makes nothing and writes nothing', async () => {
  const out = join(tmp, 'invalid-out');
  const r = await certs('test/fixtures/bad/ipsec-without-psk.yaml', ...CAS, '--out', out);
  assert.is(r.code, 1);
  assert.is(r.stdout, '');
  assert.match(r.stderr, /ipsec-without-psk\.yaml:\d+:\d+: error: /);
  assert.match(r.stderr, /no Secrets made, nothing written to /);
  assert.not.ok(existsSync(out));
});

test('--out writes one file per Secret, mode 0600 in a 0700 directory, and never replaces one', async () => {
  const out = join(tmp, 'out', 'seed');
  const r = await certs('topologies/seed.yaml', ...CAS, '--out', out);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, '');
  assert.equal(readdirSync(out).sort(), ['secret-raven-proxy-cloud.yaml', 'secret-raven-proxy-hangzhou.yaml', 'secret-raven-proxy-qingdao.yaml']);
  assert.is(statSync(out).mode & 0o777, 0o700);
  for (const f of readdirSync(out)) {
    assert.is(statSync(join(out, f)).mode & 0o777, 0o600, f);
    assert.is(secretsOf(readFileSync(join(out, f), 'utf8')).length, 1, f);
  }
  const before = readFileSync(join(out, 'secret-raven-proxy-cloud.yaml'), 'utf8');
  const again = await certs('topologies/seed.yaml', ...CAS, '--out', out);
  assert.is(again.code, 1);
  assert.match(again.stderr, /already exist/);
  assert.is(readFileSync(join(out, 'secret-raven-proxy-cloud.yaml'), 'utf8'), before);
});

test('--out refuses dist/ and any git work tree, before making anything', async () => {
  const r = await certs('topologies/seed.yaml', ...CAS, '--out', 'dist/secrets');
  assert.is(r.code, 1);
  assert.match(r.stderr, /refusing to write Secrets: dist\/secrets is inside .*dist/);
  assert.not.ok(existsSync('dist/secrets'));

  const repo = join(tmp, 'some-repo');
  mkdirSync(join(repo, '.git'), { recursive: true });
  const inRepo = await certs('topologies/seed.yaml', ...CAS, '--out', join(repo, 'deploy', 'secrets'));
  assert.is(inRepo.code, 1);
  assert.match(inRepo.stderr, /inside the git work tree/);
  assert.not.ok(existsSync(join(repo, 'deploy')));
});

test('a WireGuard cluster without L7 proxy needs no Secret', async () => {
  const r = await certs('test/fixtures/good/minimal.yaml');
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, '');
  assert.match(r.stderr, /needs no Secret/);
});

test.run();
