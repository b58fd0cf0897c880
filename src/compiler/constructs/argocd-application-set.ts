import { ApiObject } from 'cdk8s';
import { Construct } from 'constructs';
import type { Topology } from '../../topology/model.js';
import { ARGO_IGNORE_DIFFERENCES, ARGO_SYNC_POLICY } from './argocd-application.js';

export interface ArgoCdApplicationSetProps {
  /** Clusters to sync from one Argo CD; all share `namespace`. */
  readonly topologies: readonly Topology[];
  readonly namespace: string;
}

/**
 * One ApplicationSet generating an Application per compiled cluster (list generator), for a
 * management Argo CD that syncs several clusters.
 */
export class ArgoCdApplicationSet extends Construct {
  constructor(scope: Construct, id: string, props: ArgoCdApplicationSetProps) {
    super(scope, id);
    const elements = [...props.topologies]
      .sort((a, b) => (a.cluster < b.cluster ? -1 : 1))
      .map((t) => ({
        cluster: t.cluster,
        server: t.gitops.argocd!.server,
        project: t.gitops.argocd!.project,
        repoURL: t.gitops.repoURL,
        revision: t.gitops.revision,
        path: t.gitops.path,
        namespace: t.namespace,
      }));
    new ApiObject(this, 'application-set', {
      apiVersion: 'argoproj.io/v1alpha1',
      kind: 'ApplicationSet',
      metadata: { name: 'raven-clusters', namespace: props.namespace },
      spec: {
        goTemplate: true,
        goTemplateOptions: ['missingkey=error'],
        generators: [{ list: { elements } }],
        template: {
          metadata: { name: 'raven-{{.cluster}}' },
          spec: {
            project: '{{.project}}',
            source: { repoURL: '{{.repoURL}}', targetRevision: '{{.revision}}', path: '{{.path}}' },
            destination: { server: '{{.server}}', namespace: '{{.namespace}}' },
            syncPolicy: ARGO_SYNC_POLICY,
            ignoreDifferences: ARGO_IGNORE_DIFFERENCES,
          },
        },
      },
    });
  }
}
