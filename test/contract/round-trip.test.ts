/**
 * The wire contract, end to end: for every example topology, what the compiler writes is exactly
 * what the other side reads. The agent's ConfigMap is mounted as files and parsed by the agent's
 * own parser (no key written that the agent ignores, none read that the compiler does not write,
 * every value as the topology says, the tunnel MTU not lowered behind the topology's back);
 * raven-cfg reads back as the topology's switches; every Gateway survives the runtime's
 * `parseGateway` whole and validates against OpenYurt's CRD and ours, with no field either
 * schema lacks (the API server would prune it). Plus: no process spells a contract string itself.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Ajv, type ValidateFunction } from 'ajv';
import { parse } from 'yaml';
import { compile } from '../../src/compiler/compile.ts';
import { AGENT_CONFIG, AGENT_CONFIG_KEY_NAMES, parseAgentConfig } from '../../src/contract/agent-config.ts';
import { parseGateway, STANDBY_KEYS_CONFIG } from '../../src/contract/gateway.ts';
import { HEALTH_ANNOTATION, LEASE_PREFIX } from '../../src/contract/heartbeat.ts';
import { BACKEND_MAX_MTU, MEMBER_NODES_ANNOTATION, POD_CIDRS_ANNOTATION } from '../../src/contract/names.ts';
import { L3_TUNNEL_KEY, L7_PROXY_KEY, parseRavenCfg, RAVEN_CFG } from '../../src/contract/raven-cfg.ts';
import { effectiveMTU } from '../../src/agent/plan.ts';
import type { Topology } from '../../src/topology/model.ts';
import { type K8sObject, objectsOf, topologyFiles } from '../support/support.ts';

interface Example {
  readonly name: string;
  readonly topology: Topology;
  readonly objects: readonly K8sObject[];
}

function compileExample(name: string, bytes: Uint8Array): Example {
  const r = compile([{ path: name, bytes }]);
  if (!r.files) throw new Error(`expected ${name} to compile:\n${r.diagnostics.map((d) => `${d.line}:${d.col}: ${d.message}`).join('\n')}`);
  return { name, topology: r.topologies[0]!, objects: objectsOf(r.files).map((o) => o.obj) };
}

const minimal = readFileSync('test/fixtures/good/minimal.yaml', 'utf8');
const examples: Example[] = [
  ...[...topologyFiles(), ...topologyFiles('test/fixtures/good')].map((f) => compileExample(f, readFileSync(f))),
  // Jumbo frames: the derived MTU (9216 - 80) is above what the agent accepts; it stays within.
  compileExample('jumbo-wireguard.yaml', Buffer.from(minimal.replace('spec:\n', 'spec:\n  vpn: { underlayMTU: 9216 }\n'))),
  // IPsec on jumbo frames: derived from the underlay it would be 9128; libipsec carries 1400.
  compileExample('jumbo-ipsec.yaml', Buffer.from(minimal.replace('spec:\n', 'spec:\n  vpn: { backend: ipsec, underlayMTU: 9000, psk: { secretRef: { name: psk, key: psk } } }\n'))),
];

const configMap = (e: Example, name: string): Record<string, string> => {
  const cm = e.objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name === name);
  if (!cm) throw new Error(`${e.name}: no ConfigMap ${name}`);
  return cm.data as Record<string, string>;
};

/** The ConfigMap as the kubelet mounts it: one file per key, plus its dot-file bookkeeping. */
function mounted<T>(data: Record<string, string>, read: (dir: string, psk: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'raven-round-trip-'));
  try {
    const config = join(dir, 'config');
    const psk = join(dir, 'psk');
    writeFileSync(psk, 's3cret\n');
    mkdirSync(config);
    for (const [k, v] of Object.entries(data)) writeFileSync(join(config, k), v);
    writeFileSync(join(config, '..data'), 'kubelet bookkeeping');
    return read(config, psk);
  } finally {
    rmSync(dir, { recursive: true });
  }
}

const env = { NODE_NAME: 'n-1', NODE_IP: '192.0.2.1', POD_NAMESPACE: 'raven-system' };
const agentRead = (data: Record<string, string>) => mounted(data, (dir, psk) => parseAgentConfig(['--config-dir', dir, '--psk-file', psk], env));

for (const e of examples) {
  test(`${e.name}: the agent reads every key of raven-agent-config the compiler writes, and no other`, () => {
    const data = configMap(e, AGENT_CONFIG);
    const c = agentRead(data);
    assert.equal(c.ignoredKeys, undefined, 'keys written that the agent ignores');
    assert.equal(Object.keys(data).sort(), [...AGENT_CONFIG_KEY_NAMES], 'keys the agent reads that the compiler does not write (or the reverse)');
    const t = e.topology;
    assert.equal(
      [c.vpnDriver, c.vpnPort, c.tunnelMTU, c.underlayMTU, c.forwardNodeIP],
      [t.vpn.backend, t.vpn.port, t.vpn.mtu, t.vpn.underlayMTU, t.forwardNodeIP],
    );
    assert.equal(c.psk === undefined, t.vpn.backend !== 'ipsec', 'the PSK is read with ipsec only');
    // What the agent programs is what the compiler wrote: no silent cap behind the topology's back.
    assert.is(effectiveMTU({ backend: c.vpnDriver, mtu: c.tunnelMTU, underlayMTU: c.underlayMTU }), t.vpn.mtu);
    assert.ok(t.vpn.mtu <= BACKEND_MAX_MTU[t.vpn.backend], `tunnel MTU ${t.vpn.mtu} is above ${t.vpn.backend}'s ${BACKEND_MAX_MTU[t.vpn.backend]}`);
  });

  test(`${e.name}: raven-cfg reads back as the topology's switches`, () => {
    const data = configMap(e, RAVEN_CFG);
    assert.equal(Object.keys(data).sort(), [L3_TUNNEL_KEY, L7_PROXY_KEY]);
    assert.equal(parseRavenCfg(data), { l3Tunnel: e.topology.l3Tunnel, l7Proxy: e.topology.l7Proxy });
  });
}

test('the check can fail: a key the agent does not read is reported, a key it reads that is missing shows', () => {
  const data = configMap(examples[0]!, AGENT_CONFIG);
  assert.equal(agentRead({ ...data, 'tunnel-bind-addr': ':4500', 'nat-traversal': 'true' }).ignoredKeys, ['nat-traversal', 'tunnel-bind-addr']);
  const { 'proxy-metric-bind-addr': _dropped, ...short } = data;
  assert.not.equal(Object.keys(short).sort(), [...AGENT_CONFIG_KEY_NAMES]);
});

test('the MTU an old compiler wrote for retail-eu (ipsec, 1412) is what the agent lowered silently', () => {
  assert.is(effectiveMTU({ backend: 'ipsec', mtu: 1412, underlayMTU: 1500 }), BACKEND_MAX_MTU.ipsec);
  const retail = examples.find((e) => e.name === 'topologies/retail-eu.yaml')!;
  assert.is(configMap(retail, AGENT_CONFIG)['tunnel-mtu'], String(BACKEND_MAX_MTU.ipsec));
});

// --- Gateways ---------------------------------------------------------------------------------

/**
 * The schema with every object that lists its properties closed (`additionalProperties: false`):
 * the API server prunes fields a structural schema does not list, so a field either CRD lacks would
 * be dropped silently on apply.
 */
function closed(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(closed);
  if (typeof schema !== 'object' || schema === null) return schema;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(schema)) out[k] = k === 'properties' ? Object.fromEntries(Object.entries(v as object).map(([p, s]) => [p, closed(s)])) : closed(v);
  if ('properties' in out && !('additionalProperties' in out)) out.additionalProperties = false;
  return out;
}

const ajv = new Ajv({ strict: false, allErrors: true });
function crdValidators(crd: any): { open: ValidateFunction; closed: ValidateFunction } {
  const schema = crd.spec.versions.find((x: any) => x.name === 'v1beta1').schema.openAPIV3Schema;
  return { open: ajv.compile(schema), closed: ajv.compile(closed(schema) as object) };
}
const openYurt = crdValidators(parse(readFileSync('test/vendor/openyurt/raven.openyurt.io_gateways.yaml', 'utf8')));

const gateways = examples.flatMap((e) => e.objects.filter((o) => o.kind === 'Gateway').map((gw) => ({ e, gw })));

test('every example compiles to Gateways', () => {
  assert.ok(gateways.length >= 10, `${gateways.length} Gateways`);
});

for (const { e, gw } of gateways) {
  test(`${e.name}: Gateway ${gw.metadata.name} is read by the runtime whole, and is valid for OpenYurt and for us`, () => {
    const parsed = parseGateway(gw);
    assert.equal(parsed.dropped, [], 'values the runtime drops');
    assert.equal(parsed.gateway, gw, 'the runtime reads something other than what was written');
    const ours = crdValidators(e.objects.find((o) => o.kind === 'CustomResourceDefinition')!);
    for (const [who, v] of [['OpenYurt', openYurt], ['ours', ours]] as const) {
      assert.ok(v.open(gw), `${gw.metadata.name} vs ${who}: ${ajv.errorsText(v.open.errors)}`);
      assert.ok(v.closed(gw), `${gw.metadata.name} has a field ${who} would prune: ${ajv.errorsText(v.closed.errors)}`);
    }
  });
}

test('the Gateway checks can fail: a field no schema has, a value the runtime drops', () => {
  const gw = structuredClone(gateways[0]!.gw);
  gw.spec.endpoints[0].publicAddress = '203.0.113.1';
  assert.not.ok(openYurt.closed(gw));
  assert.ok(openYurt.open(gw), 'the open schema would let it through (and the API server would prune it)');
  const bad = structuredClone(gateways[0]!.gw);
  bad.spec.endpoints[0].port = 70000;
  assert.is(parseGateway(bad).dropped.length, 1);
});

// --- No process spells a contract string itself ------------------------------------------------

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Quoted as code (a backquoted name in a comment is prose). */
test('the agent, the controller and the proxy take every contract string from src/contract/', () => {
  const strings = [
    HEALTH_ANNOTATION, LEASE_PREFIX, RAVEN_CFG, AGENT_CONFIG, L3_TUNNEL_KEY, L7_PROXY_KEY, STANDBY_KEYS_CONFIG, MEMBER_NODES_ANNOTATION, POD_CIDRS_ANNOTATION,
    ...AGENT_CONFIG_KEY_NAMES,
  ];
  const found: string[] = [];
  for (const file of ['src/agent', 'src/controller', 'src/proxy'].flatMap(sources)) {
    const text = readFileSync(file, 'utf8');
    for (const s of strings) for (const q of [`'${s}'`, `"${s}"`]) if (text.includes(q)) found.push(`${file}: ${q}`);
  }
  assert.equal(found, []);
});

test.run();
