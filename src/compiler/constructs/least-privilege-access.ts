import { Construct } from 'constructs';
import { k8s } from 'cdk8s-plus-27';

export interface AccessRule {
  readonly apiGroups: readonly string[];
  readonly resources: readonly string[];
  readonly verbs: readonly string[];
  readonly resourceNames?: readonly string[];
}

export interface LeastPrivilegeAccessProps {
  /** Name of the ServiceAccount, roles and bindings. */
  readonly name: string;
  readonly namespace: string;
  readonly labels: Record<string, string>;
  /** Rules that need cluster scope (cluster-scoped resources, or watching every namespace). */
  readonly clusterRules: readonly AccessRule[];
  /** Rules confined to `namespace`. Prefer these. */
  readonly namespacedRules: readonly AccessRule[];
}

/**
 * A ServiceAccount with exactly the rules given: cluster-wide ones in a ClusterRole, everything else
 * in a Role bound only in its namespace. Rules are rendered sorted so reordering them is not a diff.
 */
export class LeastPrivilegeAccess extends Construct {
  readonly serviceAccountName: string;

  constructor(scope: Construct, id: string, props: LeastPrivilegeAccessProps) {
    super(scope, id);
    const { name, namespace, labels } = props;
    this.serviceAccountName = name;
    new k8s.KubeServiceAccount(this, 'service-account', {
      metadata: { name, namespace, labels },
      automountServiceAccountToken: true,
    });
    const subjects = [{ kind: 'ServiceAccount', name, namespace }];
    if (props.clusterRules.length) {
      new k8s.KubeClusterRole(this, 'cluster-role', { metadata: { name, labels }, rules: render(props.clusterRules) });
      new k8s.KubeClusterRoleBinding(this, 'cluster-role-binding', {
        metadata: { name, labels },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name },
        subjects,
      });
    }
    if (props.namespacedRules.length) {
      new k8s.KubeRole(this, 'role', { metadata: { name, namespace, labels }, rules: render(props.namespacedRules) });
      new k8s.KubeRoleBinding(this, 'role-binding', {
        metadata: { name, namespace, labels },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
        subjects,
      });
    }
  }
}

function render(rules: readonly AccessRule[]): k8s.PolicyRule[] {
  const key = (r: AccessRule): string => `${r.apiGroups.join(',')}|${r.resources.join(',')}|${(r.resourceNames ?? []).join(',')}`;
  return [...rules]
    .sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0))
    .map((r) => ({
      apiGroups: [...r.apiGroups],
      resources: [...r.resources],
      verbs: [...r.verbs],
      ...(r.resourceNames && { resourceNames: [...r.resourceNames] }),
    }));
}
