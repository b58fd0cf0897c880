import { ApiObject } from 'cdk8s';
import { Construct } from 'constructs';
import type { Topology } from '../../topology/model.js';
import { agentDaemonSetNames } from './raven-agent.js';
import { CONTROLLER_NAME } from './raven-controller.js';

/** The three layers Flux applies in order: each waits for the previous one to be healthy. */
export const LAYERS = ['crds', 'runtime', 'gateways'] as const;
export type Layer = (typeof LAYERS)[number];

export interface FluxSyncProps {
  readonly topology: Topology;
}

/** Flux `ref` for a revision: a 40-hex commit, a `refs/...` name, a `v`-semver tag, or a branch. */
export function fluxRef(revision: string): Record<string, string> {
  if (/^[0-9a-f]{40}$/.test(revision)) return { commit: revision };
  if (revision.startsWith('refs/')) return { name: revision };
  if (/^v\d+\.\d+\.\d+/.test(revision)) return { tag: revision };
  return { branch: revision };
}

/**
 * Flux accepts only URL-form repositories; scp-like `git@host:org/repo.git` (fine for Argo CD) becomes
 * the equivalent `ssh://git@host/org/repo.git`.
 */
export function fluxUrl(repoURL: string): string {
  const scp = /^([^@/\s]+)@([^:/\s]+):(?!\/)(.+)$/.exec(repoURL);
  return scp ? `ssh://${scp[1]}@${scp[2]}/${scp[3]}` : repoURL;
}

/**
 * Flux GitRepository + one Kustomization per layer: CRDs, then the runtime (health-checked controller
 * and agent DaemonSets), then Gateways. dependsOn makes Flux wait for each layer to be Ready.
 */
export class FluxSync extends Construct {
  constructor(scope: Construct, id: string, props: FluxSyncProps) {
    super(scope, id);
    const t = props.topology;
    const flux = t.gitops.flux!;
    const name = `raven-${t.cluster}`;
    new ApiObject(this, 'git-repository', {
      apiVersion: 'source.toolkit.fluxcd.io/v1',
      kind: 'GitRepository',
      metadata: { name, namespace: flux.namespace },
      spec: {
        interval: flux.interval,
        url: fluxUrl(t.gitops.repoURL),
        ref: fluxRef(t.gitops.revision),
        ...(flux.secretRef && { secretRef: { name: flux.secretRef } }),
      },
    });
    LAYERS.forEach((layer, i) => {
      const previous = i > 0 ? LAYERS[i - 1] : undefined;
      new ApiObject(this, `kustomization-${layer}`, {
        apiVersion: 'kustomize.toolkit.fluxcd.io/v1',
        kind: 'Kustomization',
        metadata: { name: `${name}-${layer}`, namespace: flux.namespace },
        spec: {
          interval: flux.interval,
          retryInterval: '1m',
          timeout: '5m',
          path: `./${t.gitops.path}/${layer}`,
          prune: true,
          sourceRef: { kind: 'GitRepository', name },
          ...(previous && { dependsOn: [{ name: `${name}-${previous}` }] }),
          ...(layer === 'runtime'
            ? {
                healthChecks: [
                  { apiVersion: 'apps/v1', kind: 'Deployment', name: CONTROLLER_NAME, namespace: t.namespace },
                  ...agentDaemonSetNames(t).map((ds) => ({ apiVersion: 'apps/v1', kind: 'DaemonSet', name: ds, namespace: t.namespace })),
                ],
              }
            : { wait: true }),
        },
      });
    });
  }
}
