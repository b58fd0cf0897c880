import { Construct } from 'constructs';
import { k8s } from 'cdk8s-plus-27';
import {
  AGENT_HEALTH_PORT,
  AGENT_METRICS_PORT,
  DEFAULT_PROXY_PORT,
  PROXY_INTERNAL_INSECURE_PORT,
  PROXY_INTERNAL_SECURE_PORT,
} from '../../contract/names.js';
import type { Topology } from '../../topology/model.js';

export const RAVEN_CFG = 'raven-cfg';
export const AGENT_CONFIG = 'raven-agent-config';

export interface RavenConfigProps {
  readonly topology: Topology;
  readonly labels: Record<string, string>;
}

/**
 * `raven-cfg` (the L3/L7 switches the controller stamps into active endpoints, as in OpenYurt) and
 * `raven-agent-config` (the agent's settings, mounted as files). Raven's key names are kept.
 */
export class RavenConfig extends Construct {
  constructor(scope: Construct, id: string, props: RavenConfigProps) {
    super(scope, id);
    const t = props.topology;
    const namespace = t.namespace;
    new k8s.KubeConfigMap(this, 'raven-cfg', {
      metadata: { name: RAVEN_CFG, namespace, labels: props.labels },
      data: {
        'enable-l3-tunnel': String(t.l3Tunnel),
        'enable-l7-proxy': String(t.l7Proxy),
      },
    });
    new k8s.KubeConfigMap(this, 'agent-config', {
      metadata: { name: AGENT_CONFIG, namespace, labels: props.labels },
      data: {
        'vpn-driver': t.vpn.backend,
        'vpn-port': String(t.vpn.port),
        'tunnel-bind-addr': `:${t.vpn.port}`,
        'tunnel-mtu': String(t.vpn.mtu),
        'underlay-mtu': String(t.vpn.underlayMTU),
        'nat-traversal': String(t.vpn.natTraversal),
        'forward-node-ip': String(t.forwardNodeIP),
        'metric-bind-addr': `:${AGENT_METRICS_PORT}`,
        'health-probe-addr': `:${AGENT_HEALTH_PORT}`,
        'proxy-external-addr': `:${DEFAULT_PROXY_PORT}`,
        'proxy-internal-secure-addr': `:${PROXY_INTERNAL_SECURE_PORT}`,
        'proxy-internal-insecure-addr': `:${PROXY_INTERNAL_INSECURE_PORT}`,
      },
    });
  }
}
