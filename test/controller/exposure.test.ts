/** LoadBalancer exposure: what a cloud operator sees for an exposed Gateway. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Gateway } from '../../src/contract/gateway.ts';
import { exposureName } from '../../src/contract/names.ts';
import { desiredExposure, withPublicAddresses } from '../../src/controller/exposure.ts';

const gw = (exposeType?: string): Gateway => ({ metadata: { name: 'gw-frankfurt' }, spec: { ...(exposeType && { exposeType }) } });
const active = [
  { nodeName: 'fra-gw-a', type: 'tunnel' as const, port: 4500 },
  { nodeName: 'fra-gw-b', type: 'proxy' as const, port: 10262, publicIP: '192.0.2.99' },
];
const nodes = [
  { nodeName: 'fra-gw-a', privateIP: '10.0.0.11', subnets: [] },
  { nodeName: 'fra-gw-b', privateIP: 'fd00::12', subnets: [] },
];

test('each active endpoint of a LoadBalancer Gateway gets a Service and an EndpointSlice at its node', () => {
  const ex = desiredExposure(gw('LoadBalancer'), active, nodes, 'raven-system');
  assert.equal(ex.map((e) => e.service.metadata.name), ['raven-proxy-frankfurt-fra-gw-b', 'raven-tunnel-frankfurt-fra-gw-a']);
  const tunnel = ex[1]!;
  assert.equal(tunnel.service.spec, { type: 'LoadBalancer', externalTrafficPolicy: 'Local', ports: [{ name: 'tunnel', protocol: 'UDP', port: 4500, targetPort: 4500 }] });
  assert.equal((tunnel.slice as any).endpoints, [{ addresses: ['10.0.0.11'], nodeName: 'fra-gw-a', conditions: { ready: true } }]);
  assert.is((ex[0]!.slice as any).addressType, 'IPv6');
  assert.is((tunnel.slice as any).metadata.labels['kubernetes.io/service-name'], 'raven-tunnel-frankfurt-fra-gw-a');
});

test('Gateways exposed by PublicIP or not at all get no Services', () => {
  assert.equal(desiredExposure(gw('PublicIP'), active, nodes, 'ns'), []);
  assert.equal(desiredExposure(gw(), active, nodes, 'ns'), []);
});

test('names are stable, valid DNS labels, unique even when truncated', () => {
  const long = 'n'.repeat(80);
  const a = exposureName('gw-region', { type: 'tunnel', nodeName: `${long}-a` });
  const b = exposureName('gw-region', { type: 'tunnel', nodeName: `${long}-b` });
  assert.ok(a.length <= 63 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(a), a);
  assert.is.not(a, b);
  assert.is(a, exposureName('gw-region', { type: 'tunnel', nodeName: `${long}-a` }));
});

test('publicIP comes from the Service ingress; until the cloud assigns one there is none', () => {
  const services = new Map([['raven-tunnel-frankfurt-fra-gw-a', { metadata: { name: 'raven-tunnel-frankfurt-fra-gw-a' }, status: { loadBalancer: { ingress: [{ ip: '203.0.113.50' }] } } }]]);
  const out = withPublicAddresses(gw('LoadBalancer'), active, services);
  assert.is(out[0]!.publicIP, '203.0.113.50');
  assert.is(out[1]!.publicIP, undefined, 'a stale publicIP from the spec is not trusted for a LoadBalancer');
  assert.is(withPublicAddresses(gw('PublicIP'), active, services)[1]!.publicIP, '192.0.2.99');
});

test.run();
