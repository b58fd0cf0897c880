/** Which nodes run the L7 proxy, as what, with which nodes, ports and servers: pure. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { proxyConfigFor } from '../../src/agent/proxy-role.ts';
import type { Gateway } from '../../src/contract/gateway.ts';

const addrs = { certDir: '/etc/raven/proxy', tunnelAddr: ':10262', httpAddr: ':10264', httpsAddr: ':10263', metricsAddr: ':10266' };
const on = { 'enable-l7-proxy': 'true' };
const gateways: Gateway[] = [
  {
    metadata: { name: 'gw-cloud' },
    spec: { exposeType: 'PublicIP', proxyConfig: { Replicas: 1, proxyHTTPPort: '10255,9445', proxyHTTPSPort: '10250,9100,bad' } },
    status: { activeEndpoints: [{ nodeName: 'cloud-gw-1', type: 'proxy', port: 10262, publicIP: '203.0.113.10', config: on }], nodes: [{ nodeName: 'cloud-gw-1', privateIP: '10.0.0.10', subnets: [] }] },
  },
  {
    metadata: { name: 'gw-hangzhou' },
    spec: {},
    status: { activeEndpoints: [{ nodeName: 'hz-1', type: 'proxy', config: on }, { nodeName: 'hz-1', type: 'tunnel' }], nodes: [{ nodeName: 'hz-1', privateIP: '192.168.1.11', subnets: [] }, { nodeName: 'hz-2', privateIP: '192.168.1.12', subnets: [] }] },
  },
  {
    metadata: { name: 'gw-qingdao' },
    spec: {},
    status: { activeEndpoints: [{ nodeName: 'qd-1', type: 'proxy', config: {} }], nodes: [{ nodeName: 'qd-1', privateIP: '192.168.1.11', subnets: [] }] },
  },
];

test('the cloud proxy endpoint is the server, with every node, and the exposed regions\' ports', () => {
  const c = proxyConfigFor(gateways, 'cloud-gw-1', addrs)!;
  assert.is(c.role, 'server');
  assert.equal(c.ports, { http: [9445, 10255], https: [9100, 10250] });
  assert.equal(c.nodes['qd-1'], { gateway: 'gw-qingdao', ip: '192.168.1.11' });
  assert.equal(c.nodes['hz-1'], { gateway: 'gw-hangzhou', ip: '192.168.1.11' }, 'the same address in two regions: names tell them apart');
  assert.equal(c.server, { tunnelAddr: ':10262', httpAddr: ':10264', httpsAddr: ':10263' });
});

test('an edge proxy endpoint is a client of every exposed region\'s active proxy endpoint', () => {
  const c = proxyConfigFor(gateways, 'hz-1', addrs)!;
  assert.equal([c.role, c.gateway, c.client], ['client', 'gw-hangzhou', { servers: [{ host: '203.0.113.10', port: 10262 }] }]);
});

test('no proxy off the active proxy endpoints, without enable-l7-proxy, or with no server to dial', () => {
  assert.is(proxyConfigFor(gateways, 'hz-2', addrs), undefined, 'a member');
  assert.is(proxyConfigFor(gateways, 'qd-1', addrs), undefined, 'L7 proxy not enabled on its endpoint');
  assert.is(proxyConfigFor(gateways, 'elsewhere', addrs), undefined);
  const noServer = gateways.map((g) => (g.metadata.name === 'gw-cloud' ? { ...g, status: { ...g.status!, activeEndpoints: [] } } : g));
  assert.is(proxyConfigFor(noServer, 'hz-1', addrs), undefined, 'nothing to dial yet');
});

test('an exposed Gateway whose proxy endpoint is under NAT is no server: nobody can dial it, so it dials the servers like any edge', () => {
  // Before the mesh model (src/topology/mesh.ts), the proxy role looked at exposeType alone.
  const odd = gateways.map((g) => {
    if (g.metadata.name === 'gw-hangzhou') {
      return { ...g, spec: { exposeType: 'PublicIP' }, status: { ...g.status!, activeEndpoints: [{ nodeName: 'hz-1', type: 'proxy' as const, underNAT: true, publicIP: '198.51.100.21', config: on }] } };
    }
    if (g.metadata.name === 'gw-qingdao') return { ...g, status: { ...g.status!, activeEndpoints: [{ nodeName: 'qd-1', type: 'proxy' as const, config: on }] } };
    return g;
  });
  const hz = proxyConfigFor(odd, 'hz-1', addrs)!;
  assert.equal([hz.role, hz.client], ['client', { servers: [{ host: '203.0.113.10', port: 10262 }] }]);
  assert.equal(proxyConfigFor(odd, 'qd-1', addrs)!.client, { servers: [{ host: '203.0.113.10', port: 10262 }] }, 'its address is not dialled');
  assert.is(proxyConfigFor(odd, 'cloud-gw-1', addrs)!.role, 'server');
});

test.run();
