import { Construct } from 'constructs';
import { GATEWAY_GROUP, proxySecretName, REGION_LABEL } from '../../contract/names.js';
import type { Region, Topology } from '../../topology/model.js';
import { AgentDaemonSet } from './agent-daemon-set.js';
import { AgentLeasePolicy } from './agent-lease-policy.js';
import { LeastPrivilegeAccess } from './least-privilege-access.js';

export const AGENT_NAME = 'raven-agent';
/** Pods of the gateway-candidate DaemonSets carry this name (and their region), never AGENT_NAME. */
export const GATEWAY_AGENT_NAME = 'raven-agent-gateway';

/** The DaemonSet of one region's gateway candidates. Region names are at most 60 characters; names up to 253 are valid. */
export function gatewayAgentName(region: string): string {
  return `raven-agent-gw-${region}`;
}

/** Regions with gateway candidates: each gets a DaemonSet of its own. */
export function regionsWithCandidates(t: Topology): Region[] {
  return t.regions.filter((r) => r.endpoints.length > 0);
}

/** Names of every agent DaemonSet, members' first. */
export function agentDaemonSetNames(t: Topology): string[] {
  return [AGENT_NAME, ...regionsWithCandidates(t).map((r) => gatewayAgentName(r.name))];
}

/** Every node named as an endpoint of some region: the only nodes that can be elected gateway. */
export function candidateNodes(t: Topology): string[] {
  return [...new Set(t.regions.flatMap((r) => r.endpoints.map((e) => e.node)))].sort();
}

export interface RavenAgentProps {
  readonly topology: Topology;
  readonly labels: Record<string, string>;
}

/**
 * The per-node agent, as several DaemonSets of one construct, so Secrets reach only the nodes that
 * use them: `raven-agent` on every node that is no region's gateway candidate, with no Secret at all;
 * `raven-agent-gw-<region>` on that region's candidates, with the IPsec PSK (ipsec) and the region's
 * own proxy Secret (l7Proxy). Plus the agents' RBAC and the admission policy limiting each agent to
 * its own heartbeat Lease.
 */
export class RavenAgent extends Construct {
  constructor(scope: Construct, id: string, props: RavenAgentProps) {
    super(scope, id);
    const t = props.topology;
    const namespace = t.namespace;
    const labels = { ...props.labels, 'app.kubernetes.io/component': 'agent' };

    const access = new LeastPrivilegeAccess(this, 'access', {
      name: AGENT_NAME,
      namespace,
      labels: { ...labels, 'app.kubernetes.io/name': AGENT_NAME },
      clusterRules: [
        // Reads every Gateway: routes to remote regions come from their status.
        { apiGroups: [GATEWAY_GROUP], resources: ['gateways'], verbs: ['get', 'list', 'watch'] },
      ],
      namespacedRules: [
        // The per-node heartbeat Lease, read and replaced (never patched, never deleted). RBAC cannot
        // limit create by name, nor update to names it cannot know (members selected by label):
        // AgentLeasePolicy limits every agent to raven-agent-<its node> on Kubernetes 1.30 and later.
        // The agent reads its ConfigMap as mounted files and records no events: no rule for either.
        { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create', 'get', 'update'] },
      ],
    });
    new AgentLeasePolicy(this, 'lease-policy', { namespace, serviceAccount: access.serviceAccountName, labels: { ...labels, 'app.kubernetes.io/name': AGENT_NAME } });

    const psk = t.vpn.backend === 'ipsec' ? t.vpn.psk : undefined;
    const common = { topology: t, serviceAccountName: access.serviceAccountName };
    new AgentDaemonSet(this, 'members', {
      ...common,
      name: AGENT_NAME,
      // Unchanged since the single-DaemonSet bundle: a selector is immutable.
      selector: { 'app.kubernetes.io/name': AGENT_NAME },
      labels,
      placement: { operator: 'NotIn', nodes: candidateNodes(t) },
    });
    for (const region of regionsWithCandidates(t)) {
      new AgentDaemonSet(this, `gateway-${region.name}`, {
        ...common,
        name: gatewayAgentName(region.name),
        selector: { 'app.kubernetes.io/name': GATEWAY_AGENT_NAME, [REGION_LABEL]: region.name },
        labels,
        placement: { operator: 'In', nodes: region.endpoints.map((e) => e.node) },
        ...(psk && { psk }),
        ...(t.l7Proxy && { proxySecret: proxySecretName(region.name) }),
      });
    }
  }
}
