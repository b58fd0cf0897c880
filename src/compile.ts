/**
 * The whole compiler as one pure function: topology sources → file tree, or every diagnostic.
 * Nothing here touches the file system; src/io does.
 */
import { ApiObject, App, Chart } from 'cdk8s';
import { ArgoCdApplicationSet } from './constructs/argocd-application-set.js';
import { RavenClusterChart } from './constructs/raven-cluster-chart.js';
import { documents, type FileTree, header, renderCluster } from './gitops/bundle.js';
import { type Diagnostic, hasErrors, sortDiagnostics } from './topology/diagnostics.js';
import { loadTopology } from './topology/index.js';
import type { Topology } from './topology/model.js';

export interface SourceFile {
  /** Path as the user gave it; used in messages and file headers. */
  readonly path: string;
  readonly bytes: Uint8Array;
}

export interface CompileResult {
  /** Present only when there are no errors. */
  readonly files?: FileTree;
  readonly topologies: readonly Topology[];
  readonly diagnostics: readonly Diagnostic[];
}

/** Validates every source; returns the topologies when all are valid, plus all diagnostics. */
export function validateSources(sources: readonly SourceFile[]): { topologies: Topology[]; diagnostics: Diagnostic[] } {
  const ordered = [...sources].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const diagnostics: Diagnostic[] = [];
  const topologies: Topology[] = [];
  const byCluster = new Map<string, string>();
  for (const s of ordered) {
    const r = loadTopology(s.path, s.bytes);
    diagnostics.push(...r.diagnostics);
    if (!r.topology) continue;
    const first = byCluster.get(r.topology.cluster);
    if (first !== undefined) {
      const at = r.doc!.locate(['metadata', 'name']);
      diagnostics.push({
        file: s.path,
        ...at,
        severity: 'error',
        path: 'metadata.name',
        message: `cluster "${r.topology.cluster}" is already defined in ${first}; both would compile to dist/${r.topology.cluster}/, rename one`,
      });
      continue;
    }
    byCluster.set(r.topology.cluster, s.path);
    topologies.push(r.topology);
  }
  return { topologies: topologies.sort((a, b) => (a.cluster < b.cluster ? -1 : 1)), diagnostics: sortDiagnostics(diagnostics) };
}

export function compile(sources: readonly SourceFile[]): CompileResult {
  const { topologies, diagnostics } = validateSources(sources);
  if (hasErrors(diagnostics) || topologies.length === 0) {
    if (topologies.length === 0 && !hasErrors(diagnostics)) {
      return { topologies, diagnostics: [...diagnostics, { file: '<args>', line: 0, col: 0, severity: 'error', path: '', message: 'no topology files given' }] };
    }
    return { topologies: [], diagnostics };
  }

  const app = new App({ outdir: 'unused' });
  const files: FileTree = new Map();
  for (const topology of topologies) renderCluster(new RavenClusterChart(app, { topology }), files);

  const argo = topologies.filter((t) => t.gitops.argocd);
  if (argo.length > 1) {
    const fleet = new Chart(app, 'fleet', { disableResourceNameHashes: true });
    const namespaces = [...new Set(argo.map((t) => t.gitops.argocd!.namespace))].sort();
    const sets = namespaces.map(
      (namespace) =>
        new ArgoCdApplicationSet(fleet, namespace, { namespace, topologies: argo.filter((t) => t.gitops.argocd!.namespace === namespace) }),
    );
    const objects = sets.flatMap((s) => s.node.findAll()).filter((c): c is ApiObject => c instanceof ApiObject);
    files.set('argocd-applicationset.yaml', header(argo.map((t) => t.source)) + documents(objects));
  }
  return { files: new Map([...files.entries()].sort(([a], [b]) => (a < b ? -1 : 1))), topologies, diagnostics };
}
