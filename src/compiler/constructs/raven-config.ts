import { Construct } from 'constructs';
import { k8s } from 'cdk8s-plus-27';
import { AGENT_CONFIG, renderAgentConfig } from '../../contract/agent-config.js';
import { RAVEN_CFG, renderRavenCfg } from '../../contract/raven-cfg.js';
import type { Topology } from '../../topology/model.js';

export { AGENT_CONFIG } from '../../contract/agent-config.js';
export { RAVEN_CFG } from '../../contract/raven-cfg.js';

export interface RavenConfigProps {
  readonly topology: Topology;
  readonly labels: Record<string, string>;
}

/**
 * `raven-cfg` (the L3/L7 switches the controller stamps into active endpoints, as in OpenYurt) and
 * `raven-agent-config` (the agent's settings, mounted as files). Their keys and values are the
 * contract's (src/contract/raven-cfg.ts, agent-config.ts), which the controller and the agent read with.
 */
export class RavenConfig extends Construct {
  constructor(scope: Construct, id: string, props: RavenConfigProps) {
    super(scope, id);
    const t = props.topology;
    const namespace = t.namespace;
    new k8s.KubeConfigMap(this, 'raven-cfg', {
      metadata: { name: RAVEN_CFG, namespace, labels: props.labels },
      data: renderRavenCfg(t),
    });
    new k8s.KubeConfigMap(this, 'agent-config', {
      metadata: { name: AGENT_CONFIG, namespace, labels: props.labels },
      data: renderAgentConfig(t),
    });
  }
}
