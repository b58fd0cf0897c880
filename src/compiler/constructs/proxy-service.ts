import { Construct } from 'constructs';
import { k8s } from 'cdk8s-plus-27';
import { PROXY_INTERNAL_INSECURE_PORT, PROXY_INTERNAL_SECURE_PORT } from '../../contract/names.js';
import type { Topology } from '../../topology/model.js';
import { isExposed } from '../../topology/mesh.js';
import { PROXY_SERVICE_NAME } from '../../contract/names.js';

export { PROXY_SERVICE_NAME };

export interface ProxyServiceProps {
  readonly topology: Topology;
  readonly labels: Record<string, string>;
}

/**
 * Ports of the in-cluster proxy entry: every exposed region's proxy ports (the ports the proxy
 * fronts serve, src/agent/proxy-role.ts), deduplicated and sorted.
 */
export function proxyServicePorts(t: Topology): k8s.ServicePort[] {
  const ports = new Map<string, k8s.ServicePort>();
  for (const r of t.regions.filter((x) => isExposed(x.exposure))) {
    for (const p of r.proxyPorts.http) {
      ports.set(`http-${p}`, { name: `http-${p}`, port: p, protocol: 'TCP', targetPort: k8s.IntOrString.fromNumber(PROXY_INTERNAL_INSECURE_PORT) });
    }
    for (const p of r.proxyPorts.https) {
      ports.set(`https-${p}`, { name: `https-${p}`, port: p, protocol: 'TCP', targetPort: k8s.IntOrString.fromNumber(PROXY_INTERNAL_SECURE_PORT) });
    }
  }
  return [...ports.values()].sort((a, b) => (a.name! < b.name! ? -1 : 1));
}

/**
 * The in-cluster entry of the L7 proxy: cloud components (kube-apiserver, Prometheus) reach edge
 * nodes' ports through it. Selector-less: the controller keeps its EndpointSlices
 * (`x-raven-proxy-internal-svc-ipv4`/`-ipv6`) pointing at the nodes of the active proxy endpoints
 * of exposed regions, on these ports' target ports (src/controller/proxy-entry.ts).
 */
export class ProxyService extends Construct {
  constructor(scope: Construct, id: string, props: ProxyServiceProps) {
    super(scope, id);
    new k8s.KubeService(this, 'service', {
      metadata: {
        name: PROXY_SERVICE_NAME,
        namespace: props.topology.namespace,
        labels: { ...props.labels, 'app.kubernetes.io/component': 'proxy' },
      },
      spec: { type: 'ClusterIP', ports: proxyServicePorts(props.topology) },
    });
  }
}
