import { ApiObject } from 'cdk8s';
import { Construct } from 'constructs';
import { LEASE_PREFIX } from '../../contract/heartbeat.js';

/** The bound token's claim naming the node its pod runs on (Kubernetes ≥ 1.30, ServiceAccountTokenPodNodeInfo). */
export const NODE_NAME_CLAIM = 'authentication.kubernetes.io/node-name';
export const AGENT_LEASE_POLICY = 'raven-agent-own-lease';

export interface AgentLeasePolicyProps {
  readonly namespace: string;
  /** The agents' ServiceAccount, in `namespace`. */
  readonly serviceAccount: string;
  readonly labels: Record<string, string>;
}

/**
 * Per-node authority for heartbeats: a ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1,
 * Kubernetes ≥ 1.30) and its binding. RBAC cannot limit `create` by name, and every agent shares one
 * ServiceAccount, so RBAC alone lets any node write any Lease in the namespace: other nodes'
 * heartbeats and the controller's leader Lease. The policy lets the agents' ServiceAccount create
 * or update only `raven-agent-<its node>`, held by that node, in its namespace, where "its node" is
 * the node-name claim of the pod-bound token the kubelet gave it; without the claim it may write no
 * Lease at all. Requests of anyone else are not matched (matchConditions) and pass through.
 */
export class AgentLeasePolicy extends Construct {
  constructor(scope: Construct, id: string, props: AgentLeasePolicyProps) {
    super(scope, id);
    const { namespace, serviceAccount, labels } = props;
    const claim = `request.userInfo.extra['${NODE_NAME_CLAIM}']`;
    new ApiObject(this, 'policy', {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicy',
      metadata: { name: AGENT_LEASE_POLICY, labels },
      spec: {
        failurePolicy: 'Fail',
        matchConstraints: {
          resourceRules: [{ apiGroups: ['coordination.k8s.io'], apiVersions: ['*'], operations: ['CREATE', 'UPDATE'], resources: ['leases'] }],
        },
        matchConditions: [{ name: 'raven-agent-service-account', expression: `request.userInfo.username == 'system:serviceaccount:${namespace}:${serviceAccount}'` }],
        variables: [
          // '' when the token carries no node claim (or not exactly one value): nothing matches it.
          { name: 'node', expression: `has(request.userInfo.extra) && '${NODE_NAME_CLAIM}' in request.userInfo.extra && size(${claim}) == 1 ? ${claim}[0] : ''` },
        ],
        validations: [
          {
            expression: "variables.node != ''",
            message: `raven-agent may write Leases only with a token bound to a pod on a node (the ${NODE_NAME_CLAIM} claim, Kubernetes 1.30 or later)`,
            reason: 'Forbidden',
          },
          {
            expression: `request.namespace == '${namespace}'`,
            message: `raven-agent may write Leases only in ${namespace}`,
            reason: 'Forbidden',
          },
          {
            expression: `has(object.metadata.name) && object.metadata.name == '${LEASE_PREFIX}' + variables.node`,
            messageExpression: `'raven-agent on node ' + variables.node + ' may write only the Lease ${LEASE_PREFIX}' + variables.node`,
            reason: 'Forbidden',
          },
          {
            expression: 'has(object.spec.holderIdentity) && object.spec.holderIdentity == variables.node',
            messageExpression: "'raven-agent on node ' + variables.node + ' must hold its Lease as ' + variables.node",
            reason: 'Forbidden',
          },
        ],
      },
    });
    new ApiObject(this, 'binding', {
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'ValidatingAdmissionPolicyBinding',
      metadata: { name: AGENT_LEASE_POLICY, labels },
      spec: { policyName: AGENT_LEASE_POLICY, validationActions: ['Deny'] },
    });
  }
}
