/**
 * The compiled ValidatingAdmissionPolicy that keeps every agent to its own heartbeat Lease, run as
 * the API server runs it: its CEL (a real CEL implementation, not a look at the strings) over
 * honest and forged Lease requests. matchConditions that are false mean "not this policy's
 * business" (allowed); otherwise every validation must be true, and an evaluation error denies
 * (failurePolicy Fail).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { evaluate } from '@marcbachmann/cel-js';
import { leaseName } from '../../src/contract/heartbeat.ts';
import { type K8sObject, mustCompile, objectsOf } from '../support/support.ts';

const all = objectsOf(mustCompile(['topologies/seed.yaml'])).map((o) => o.obj);
const policy = all.find((o) => o.kind === 'ValidatingAdmissionPolicy')!;
const binding = all.find((o) => o.kind === 'ValidatingAdmissionPolicyBinding')!;
const NS = 'raven-system';
const AGENT = `system:serviceaccount:${NS}:raven-agent`;
const CLAIM = 'authentication.kubernetes.io/node-name';

interface Req {
  readonly user: string;
  /** userInfo.extra; omitted = no extra at all. */
  readonly extra?: Record<string, string[]>;
  readonly operation?: 'CREATE' | 'UPDATE' | 'DELETE';
  readonly namespace?: string;
  readonly name: string;
  readonly holder?: string;
}

/** What the policy decides: allowed, or denied with the failing validations' messages. */
function admit(r: Req): { allowed: true } | { allowed: false; messages: string[] } {
  const operation = r.operation ?? 'UPDATE';
  const rule = policy.spec.matchConstraints.resourceRules[0];
  if (!rule.operations.includes(operation) || !rule.resources.includes('leases')) return { allowed: true };
  const object = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: r.name, namespace: r.namespace ?? NS }, spec: { ...(r.holder !== undefined && { holderIdentity: r.holder }) } };
  const request = {
    operation,
    namespace: r.namespace ?? NS,
    name: r.name,
    resource: { group: 'coordination.k8s.io', version: 'v1', resource: 'leases' },
    userInfo: { username: r.user, groups: ['system:serviceaccounts', `system:serviceaccounts:${NS}`, 'system:authenticated'], ...(r.extra && { extra: r.extra }) },
  };
  const ctx: Record<string, unknown> = { request, object, oldObject: operation === 'UPDATE' ? object : null };
  try {
    for (const c of policy.spec.matchConditions) if (evaluate(c.expression, ctx) !== true) return { allowed: true };
    const variables: Record<string, unknown> = {};
    for (const v of policy.spec.variables) variables[v.name] = evaluate(v.expression, { ...ctx, variables });
    const messages: string[] = [];
    for (const v of policy.spec.validations) {
      if (evaluate(v.expression, { ...ctx, variables }) === true) continue;
      messages.push(v.messageExpression ? String(evaluate(v.messageExpression, { ...ctx, variables })) : v.message);
    }
    return messages.length ? { allowed: false, messages } : { allowed: true };
  } catch (err) {
    return { allowed: false, messages: [`evaluation error: ${(err as Error).message.split('\n')[0]}`] };
  }
}

const onNode = (node: string): Record<string, string[]> => ({ [CLAIM]: [node], 'authentication.kubernetes.io/pod-name': [`raven-agent-x7k2p`] });

test('the policy is bound with Deny, fails closed, and matches only the agent ServiceAccount', () => {
  assert.equal(binding.spec, { policyName: policy.metadata.name, validationActions: ['Deny'] });
  assert.is(policy.apiVersion, 'admissionregistration.k8s.io/v1');
  assert.is(policy.spec.failurePolicy, 'Fail');
  assert.equal(policy.spec.matchConstraints.resourceRules, [{ apiGroups: ['coordination.k8s.io'], apiVersions: ['*'], operations: ['CREATE', 'UPDATE'], resources: ['leases'] }]);
});

test('the Argo CD wave puts the policy in force before any agent runs', () => {
  const wave = (o: K8sObject): number => Number(o.metadata.annotations?.['argocd.argoproj.io/sync-wave']);
  const agents = all.filter((o) => o.kind === 'DaemonSet').map(wave);
  assert.ok(wave(policy) < Math.min(...agents) && wave(binding) < Math.min(...agents));
});

const cases: [string, Req, string[] | 'allowed'][] = [
  ['an honest renewal of its own Lease is allowed', { user: AGENT, extra: onNode('hz-1'), name: leaseName('hz-1'), holder: 'hz-1' }, 'allowed'],
  ['creating its own Lease is allowed', { user: AGENT, extra: onNode('hz-1'), operation: 'CREATE', name: leaseName('hz-1'), holder: 'hz-1' }, 'allowed'],
  ['a forged heartbeat of another node (name and holder) is denied', { user: AGENT, extra: onNode('hz-1'), name: leaseName('hz-2'), holder: 'hz-2' }, [
    'raven-agent on node hz-1 may write only the Lease raven-agent-hz-1',
    'raven-agent on node hz-1 must hold its Lease as hz-1',
  ]],
  ['a forged name with its own holder is denied', { user: AGENT, extra: onNode('hz-1'), operation: 'CREATE', name: leaseName('qd-1'), holder: 'hz-1' }, ['raven-agent on node hz-1 may write only the Lease raven-agent-hz-1']],
  ['a forged holder on its own Lease is denied', { user: AGENT, extra: onNode('hz-1'), name: leaseName('hz-1'), holder: 'cloud-gw-1' }, ['raven-agent on node hz-1 must hold its Lease as hz-1']],
  ['its own Lease without a holder is denied', { user: AGENT, extra: onNode('hz-1'), name: leaseName('hz-1') }, ['raven-agent on node hz-1 must hold its Lease as hz-1']],
  ["taking the controller's leader Lease is denied", { user: AGENT, extra: onNode('hz-1'), name: 'raven-controller', holder: 'raven-controller-6d5f-abcde' }, [
    'raven-agent on node hz-1 may write only the Lease raven-agent-hz-1',
    'raven-agent on node hz-1 must hold its Lease as hz-1',
  ]],
  ["creating the controller's leader Lease in its own name is denied", { user: AGENT, extra: onNode('hz-1'), operation: 'CREATE', name: 'raven-controller', holder: 'hz-1' }, ['raven-agent on node hz-1 may write only the Lease raven-agent-hz-1']],
  ['its own Lease name in another namespace is denied', { user: AGENT, extra: onNode('hz-1'), namespace: 'kube-node-lease', name: leaseName('hz-1'), holder: 'hz-1' }, [`raven-agent may write Leases only in ${NS}`]],
  ['a token without extra (no node binding) is denied', { user: AGENT, name: leaseName('hz-1'), holder: 'hz-1' }, [
    'raven-agent may write Leases only with a token bound to a pod on a node (the authentication.kubernetes.io/node-name claim, Kubernetes 1.30 or later)',
    'raven-agent on node  may write only the Lease raven-agent-',
    'raven-agent on node  must hold its Lease as ',
  ]],
  ['a token whose extra lacks the node claim is denied', { user: AGENT, extra: { 'authentication.kubernetes.io/pod-name': ['p'] }, name: leaseName('hz-1'), holder: 'hz-1' }, [
    'raven-agent may write Leases only with a token bound to a pod on a node (the authentication.kubernetes.io/node-name claim, Kubernetes 1.30 or later)',
    'raven-agent on node  may write only the Lease raven-agent-',
    'raven-agent on node  must hold its Lease as ',
  ]],
  ['a node claim with two values is denied', { user: AGENT, extra: { [CLAIM]: ['hz-1', 'hz-2'] }, name: leaseName('hz-1'), holder: 'hz-1' }, [
    'raven-agent may write Leases only with a token bound to a pod on a node (the authentication.kubernetes.io/node-name claim, Kubernetes 1.30 or later)',
    'raven-agent on node  may write only the Lease raven-agent-',
    'raven-agent on node  must hold its Lease as ',
  ]],
  ['an empty node name cannot match the bare prefix', { user: AGENT, extra: { [CLAIM]: [''] }, operation: 'CREATE', name: 'raven-agent-', holder: '' }, [
    'raven-agent may write Leases only with a token bound to a pod on a node (the authentication.kubernetes.io/node-name claim, Kubernetes 1.30 or later)',
  ]],
  ["the controller's own leader election passes through", { user: `system:serviceaccount:${NS}:raven-controller`, name: 'raven-controller', holder: 'raven-controller-6d5f-abcde' }, 'allowed'],
  ['another ServiceAccount is not this policy\'s business (RBAC decides)', { user: 'system:serviceaccount:monitoring:prometheus', extra: onNode('hz-1'), name: leaseName('hz-2'), holder: 'hz-2' }, 'allowed'],
  ['an agent ServiceAccount of another namespace is not matched', { user: 'system:serviceaccount:other:raven-agent', extra: onNode('hz-1'), name: leaseName('hz-2'), holder: 'hz-2' }, 'allowed'],
  ['a kubelet renewing its node Lease passes through', { user: 'system:node:hz-1', namespace: 'kube-node-lease', name: 'hz-1', holder: 'hz-1' }, 'allowed'],
];

for (const [name, req, want] of cases) {
  test(name, () => {
    const got = admit(req);
    assert.equal(got, want === 'allowed' ? { allowed: true } : { allowed: false, messages: want });
  });
}

test('the test can fail: a policy that forgets the holder check lets a forged holder through', () => {
  const saved = policy.spec.validations;
  policy.spec.validations = saved.filter((v: any) => !v.expression.includes('holderIdentity'));
  try {
    assert.equal(admit({ user: AGENT, extra: onNode('hz-1'), name: leaseName('hz-1'), holder: 'cloud-gw-1' }), { allowed: true });
  } finally {
    policy.spec.validations = saved;
  }
});

test.run();
