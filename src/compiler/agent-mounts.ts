/**
 * Which compiled agent DaemonSet would run on a node, and which Secrets it mounts there: the lab
 * gives each agent exactly the files a cluster would, read from the compiled objects (pure).
 */
import type * as k8s from '@kubernetes/client-node';
import { PROXY_CERTS_VOLUME, PSK_VOLUME } from '../contract/names.js';

export interface AgentMounts {
  readonly daemonSet: string;
  /** The PSK Secret and key, when this node's DaemonSet mounts it (IPsec gateway candidates). */
  readonly psk?: { readonly name: string; readonly key: string };
  /** The proxy Secret, when this node's DaemonSet mounts one (L7 proxy gateway candidates). */
  readonly proxySecret?: string;
}

/** Required node affinity by name, as the DaemonSet controller applies it (matchFields on metadata.name only). */
export function placesOn(ds: k8s.V1DaemonSet, node: string): boolean {
  const terms = ds.spec?.template.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms;
  if (!terms?.length) return true;
  return terms.some((t) =>
    (t.matchFields ?? []).every((r) => {
      if (r.key !== 'metadata.name') return false;
      const named = (r.values ?? []).includes(node);
      return r.operator === 'In' ? named : r.operator === 'NotIn' ? !named : false;
    }),
  );
}

/** The one agent DaemonSet placed on `node`; an error if none or several are (the compiler's contract). */
export function agentMounts(objects: readonly k8s.KubernetesObject[], node: string): AgentMounts {
  const sets = objects.filter((o): o is k8s.V1DaemonSet => o.kind === 'DaemonSet').filter((ds) => placesOn(ds, node));
  if (sets.length !== 1) throw new Error(`failed to find the agent DaemonSet of node ${node}: ${sets.length ? sets.map((d) => d.metadata?.name).join(', ') : 'none'} would run there`);
  const ds = sets[0]!;
  const volumes = ds.spec?.template.spec?.volumes ?? [];
  const psk = volumes.find((v) => v.name === PSK_VOLUME)?.secret;
  const proxy = volumes.find((v) => v.name === PROXY_CERTS_VOLUME)?.secret;
  const pskKey = psk?.items?.[0]?.key;
  return {
    daemonSet: ds.metadata?.name ?? '',
    ...(psk?.secretName && pskKey && { psk: { name: psk.secretName, key: pskKey } }),
    ...(proxy?.secretName && { proxySecret: proxy.secretName }),
  };
}

/** The PSK Secret the compiled gateway DaemonSets mount (one for the whole mesh). */
export function pskSecretRef(objects: readonly k8s.KubernetesObject[]): { name: string; key: string } {
  for (const o of objects) {
    if (o.kind !== 'DaemonSet') continue;
    const secret = (o as k8s.V1DaemonSet).spec?.template.spec?.volumes?.find((v) => v.name === PSK_VOLUME)?.secret;
    const key = secret?.items?.[0]?.key;
    if (secret?.secretName && key) return { name: secret.secretName, key };
  }
  throw new Error('the compiled agent DaemonSets mount no PSK Secret');
}
