/**
 * The compiler front end: bytes of one topology file → typed model, or every problem in it.
 * Pure (no I/O); `readTopologies()` in src/io does the reading.
 */
import { type Diagnostic, formatPath, printable, sortDiagnostics } from './diagnostics.js';
import type { Finding } from './check.js';
import { check } from './check.js';
import type { Topology } from './model.js';
import { normalize, type RawTopology } from './normalize.js';
import { parseSource, type SourceDocument } from './source.js';
import { validateSchema } from './validate.js';

export interface LoadResult {
  /** Present when the file has no errors (it may have warnings). */
  readonly topology?: Topology;
  /** Present when the file parsed as YAML; maps paths back to positions. */
  readonly doc?: SourceDocument;
  readonly diagnostics: readonly Diagnostic[];
}

export function loadTopology(file: string, bytes: Uint8Array): LoadResult {
  const parsed = parseSource(file, bytes);
  if (!parsed.ok) return { diagnostics: sortDiagnostics(parsed.diagnostics) };
  const doc = parsed.doc;

  const schemaFindings = validateSchema(doc.data);
  if (schemaFindings.length > 0) return { doc, diagnostics: position(doc, schemaFindings) };

  const topology = normalize(file, doc.data as RawTopology);
  const where = (path: Parameters<typeof doc.locate>[0]): string => {
    const at = doc.locate(path);
    return `${printable(doc.file)}:${at.line}:${at.col}`;
  };
  const diagnostics = position(doc, check(topology, where));
  return diagnostics.some((d) => d.severity === 'error') ? { doc, diagnostics } : { doc, topology, diagnostics };
}

function position(doc: SourceDocument, findings: readonly Finding[]): Diagnostic[] {
  return sortDiagnostics(
    findings.map((f) => ({
      file: doc.file,
      ...(f.atKey ? doc.locateKey(f.path) : doc.locate(f.path)),
      severity: f.severity,
      path: formatPath(f.path),
      message: f.message,
    })),
  );
}

export type { Topology } from './model.js';
export type { Diagnostic } from './diagnostics.js';
export { formatDiagnostic, hasErrors } from './diagnostics.js';
