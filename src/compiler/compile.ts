/**
 * The whole compiler as one pure function: topology sources → file tree, or every diagnostic.
 * Nothing here touches the file system; src/io does.
 */
import { ApiObject, App, Chart } from 'cdk8s';
import { ArgoCdApplicationSet } from './constructs/argocd-application-set.js';
import { RavenClusterChart } from './constructs/raven-cluster-chart.js';
import { documents, type FileTree, header, type ObjectProblem, OutputBudget, renderCluster } from './bundle.js';
import { type Diagnostic, hasErrors, type PathSegment, printable, sortDiagnostics } from '../topology/diagnostics.js';
import { loadTopology } from '../topology/index.js';
import { MAX_OUTPUT_BYTES, MAX_TOTAL_INPUT_BYTES } from '../topology/limits.js';
import type { Topology } from '../topology/model.js';
import type { Position, SourceDocument } from '../topology/source.js';

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

export interface CompileLimits {
  /** Bytes of all sources together. @default MAX_TOTAL_INPUT_BYTES */
  readonly maxInputBytes?: number;
  /** Bytes of all files written. @default MAX_OUTPUT_BYTES */
  readonly maxOutputBytes?: number;
}

const byPath = (a: SourceFile, b: SourceFile): number => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);

/**
 * The first source, in path order, with which the sources together pass `limit` bytes, as a
 * diagnostic; undefined when they fit. Shared with src/io, which stops reading at the same point.
 */
export function totalInputProblem(file: string, total: number, limit: number = MAX_TOTAL_INPUT_BYTES): Diagnostic | undefined {
  if (total <= limit) return undefined;
  return {
    file,
    line: 1,
    col: 1,
    severity: 'error',
    path: '',
    message: `with this file the topologies given total more than ${limit} bytes (${limit / (1024 * 1024)} MiB), the limit for one run; compile fewer files at a time`,
  };
}

interface Validated {
  readonly topologies: Topology[];
  readonly diagnostics: Diagnostic[];
  /** Each valid topology's document, to place findings made after validation. */
  readonly docs: Map<Topology, SourceDocument>;
}

function validateAll(sources: readonly SourceFile[], limits: CompileLimits): Validated {
  const ordered = [...sources].sort(byPath);
  const docs = new Map<Topology, SourceDocument>();
  let total = 0;
  for (const s of ordered) {
    total += s.bytes.length;
    const tooMuch = totalInputProblem(s.path, total, limits.maxInputBytes ?? MAX_TOTAL_INPUT_BYTES);
    if (tooMuch) return { topologies: [], diagnostics: [tooMuch], docs };
  }
  const diagnostics: Diagnostic[] = [];
  const topologies: Topology[] = [];
  const byCluster = new Map<string, string>();
  const byBundle = new Map<string, { topology: Topology; at: string }>();
  const at = (doc: SourceDocument, path: readonly PathSegment[]): Position => doc.locate(path);
  for (const s of ordered) {
    const r = loadTopology(s.path, s.bytes);
    diagnostics.push(...r.diagnostics);
    if (!r.topology) continue;
    const t = r.topology;
    const doc = r.doc!;
    const first = byCluster.get(t.cluster);
    if (first !== undefined) {
      diagnostics.push({
        file: s.path,
        ...at(doc, ['metadata', 'name']),
        severity: 'error',
        path: 'metadata.name',
        message: `cluster "${t.cluster}" is already defined in ${printable(first)}; both would compile to dist/${t.cluster}/, rename one`,
      });
      continue;
    }
    byCluster.set(t.cluster, s.path);
    // Two clusters synced from one place in one repository would each get the other's bundle.
    const syncs = (x: Topology): boolean => x.gitops.argocd !== undefined || x.gitops.flux !== undefined;
    const bundle = `${t.gitops.repoURL} ${t.gitops.revision} ${t.gitops.path}`;
    const other = syncs(t) ? byBundle.get(bundle) : undefined;
    if (other) {
      const explicit = (doc.data as { spec?: { gitops?: { path?: unknown } } }).spec?.gitops?.path !== undefined;
      const path = explicit ? ['spec', 'gitops', 'path'] : ['spec', 'gitops'];
      diagnostics.push({
        file: s.path,
        ...at(doc, path),
        severity: 'error',
        path: path.join('.'),
        message: `cluster "${t.cluster}" syncs from ${t.gitops.path} at ${t.gitops.revision} of ${t.gitops.repoURL}, as cluster "${other.topology.cluster}" does (${other.at}); each cluster needs its own bundle: remove spec.gitops.path (default dist/<cluster>) or give each its own`,
      });
      continue;
    }
    if (syncs(t)) {
      const pos = at(doc, ['spec', 'gitops']);
      byBundle.set(bundle, { topology: t, at: `${printable(s.path)}:${pos.line}:${pos.col}` });
    }
    docs.set(t, doc);
    topologies.push(t);
  }
  return { topologies: topologies.sort((a, b) => (a.cluster < b.cluster ? -1 : 1)), diagnostics: sortDiagnostics(diagnostics), docs };
}

/** Validates every source; returns the topologies when all are valid, plus all diagnostics. */
export function validateSources(sources: readonly SourceFile[], limits: CompileLimits = {}): { topologies: Topology[]; diagnostics: Diagnostic[] } {
  const { topologies, diagnostics } = validateAll(sources, limits);
  return { topologies, diagnostics };
}

export function compile(sources: readonly SourceFile[], limits: CompileLimits = {}): CompileResult {
  const { topologies, diagnostics, docs } = validateAll(sources, limits);
  if (hasErrors(diagnostics) || topologies.length === 0) {
    if (topologies.length === 0 && !hasErrors(diagnostics)) {
      return { topologies, diagnostics: [...diagnostics, { file: '<args>', line: 0, col: 0, severity: 'error', path: '', message: 'no topology files given' }] };
    }
    return { topologies: [], diagnostics };
  }

  const maxOutput = limits.maxOutputBytes ?? MAX_OUTPUT_BYTES;
  const budget = new OutputBudget(maxOutput);
  const app = new App({ outdir: 'unused' });
  const files: FileTree = new Map();
  const problems: Diagnostic[] = [];
  for (const topology of topologies) {
    const found = renderCluster(new RavenClusterChart(app, { topology }), files, budget);
    problems.push(...found.map((p) => objectDiagnostic(topology, docs.get(topology)!, p)));
    if (budget.exceeded) {
      const doc = docs.get(topology)!;
      problems.push({
        file: topology.source,
        ...doc.locate(['metadata', 'name']),
        severity: 'error',
        path: 'metadata.name',
        message: `the output passes ${maxOutput} bytes (${maxOutput / (1024 * 1024)} MiB) while compiling cluster "${topology.cluster}", the limit for one run; compile fewer or smaller topologies at a time`,
      });
      break;
    }
  }
  if (problems.length > 0) return { topologies: [], diagnostics: sortDiagnostics([...diagnostics, ...problems]) };

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

/** A rendered object Kubernetes would refuse, placed at its region when it has one, else at the cluster. */
function objectDiagnostic(t: Topology, doc: SourceDocument, p: ObjectProblem): Diagnostic {
  const region = p.region === undefined ? undefined : t.regions.find((r) => r.name === p.region);
  const path: PathSegment[] = region ? [...region.path, 'name'] : ['metadata', 'name'];
  const fix = region
    ? `region "${region.name}" is too large for one object: select members with nodeSelector instead of listing them, or split the region`
    : `cluster "${t.cluster}" is too large for one object: split it into several clusters or regions with fewer gateway candidates`;
  return { file: t.source, ...doc.locate(path), severity: 'error', path: region ? `spec.regions[${String(region.path[2])}].name` : 'metadata.name', message: `${p.message}; ${fix}` };
}
