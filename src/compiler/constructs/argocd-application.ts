import { ApiObject } from 'cdk8s';
import { Construct } from 'constructs';
import type { Topology } from '../../topology/model.js';

/** Sync options shared by the Application and the ApplicationSet template. */
export const ARGO_SYNC_POLICY = {
  automated: { prune: true, selfHeal: true },
  // ServerSideApply: the CRD's schema is too big for client-side last-applied annotations and SSA lets
  // the controller own Gateway status without fighting Argo. PruneLast removes old Gateways only after
  // the rest of the sync is healthy.
  syncOptions: ['ServerSideApply=true', 'PruneLast=true'],
  retry: { limit: 5, backoff: { duration: '5s', factor: 2, maxDuration: '3m' } },
};

/** Status written by the controller must never count as drift. */
export const ARGO_IGNORE_DIFFERENCES = [{ group: 'raven.openyurt.io', kind: 'Gateway', jsonPointers: ['/status'] }];

export interface ArgoCdApplicationProps {
  readonly topology: Topology;
}

/**
 * The Argo CD Application syncing this cluster's bundle. No resources-finalizer on purpose: deleting
 * the Application must not tear down the network of a running cluster.
 */
export class ArgoCdApplication extends Construct {
  constructor(scope: Construct, id: string, props: ArgoCdApplicationProps) {
    super(scope, id);
    const t = props.topology;
    const argocd = t.gitops.argocd!;
    new ApiObject(this, 'application', {
      apiVersion: 'argoproj.io/v1alpha1',
      kind: 'Application',
      metadata: { name: `raven-${t.cluster}`, namespace: argocd.namespace },
      spec: {
        project: argocd.project,
        source: { repoURL: t.gitops.repoURL, targetRevision: t.gitops.revision, path: t.gitops.path },
        destination: { server: argocd.server, namespace: t.namespace },
        syncPolicy: ARGO_SYNC_POLICY,
        ignoreDifferences: ARGO_IGNORE_DIFFERENCES,
      },
    });
  }
}
