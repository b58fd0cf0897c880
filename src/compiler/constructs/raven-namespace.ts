import { Construct } from 'constructs';
import { k8s } from 'cdk8s-plus-27';

/**
 * Pod Security Admission labels of the raven namespace. The agents are privileged, on the host
 * network, with hostPath volumes: only the `privileged` level admits them, and a cluster whose
 * default level is `baseline` or `restricted` (an AdmissionConfiguration default, or a managed
 * cluster's policy) would refuse every agent pod without these. `audit` and `warn` match `enforce`,
 * so the namespace reports no violations the enforcing level allows; `latest` because the
 * privileged level is the same in every version.
 */
export const POD_SECURITY_LABELS: Readonly<Record<string, string>> = Object.freeze({
  'pod-security.kubernetes.io/enforce': 'privileged',
  'pod-security.kubernetes.io/enforce-version': 'latest',
  'pod-security.kubernetes.io/audit': 'privileged',
  'pod-security.kubernetes.io/warn': 'privileged',
});

export interface RavenNamespaceProps {
  readonly name: string;
}

/**
 * The namespace of the controller, the agents and their configuration, labelled for privileged
 * pods, and never pruned: deleting it would cut every cross-region connection.
 */
export class RavenNamespace extends Construct {
  constructor(scope: Construct, id: string, props: RavenNamespaceProps) {
    super(scope, id);
    const ns = new k8s.KubeNamespace(this, 'namespace', { metadata: { name: props.name, labels: { ...POD_SECURITY_LABELS } } });
    ns.metadata.addAnnotation('argocd.argoproj.io/sync-options', 'Delete=false');
    ns.metadata.addAnnotation('kustomize.toolkit.fluxcd.io/prune', 'disabled');
  }
}
