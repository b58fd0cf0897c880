/**
 * Diagnostics: every problem found in a topology file, with where it is and how to fix it.
 *
 * The compiler collects all diagnostics before deciding anything; nothing is written while
 * any diagnostic has severity `error`.
 */

export type Severity = 'error' | 'warning';

export interface Diagnostic {
  readonly file: string;
  /** 1-based line and column of the offending YAML node (the key, for a missing or unknown field). */
  readonly line: number;
  readonly col: number;
  readonly severity: Severity;
  /** Dotted YAML path, e.g. `spec.regions[1].podCIDRs[0]`; empty for file-level problems. */
  readonly path: string;
  /** What is wrong, then how to fix it. */
  readonly message: string;
}

/** `file:line:col: severity: message (at path)`, one line, the shape editors and CI annotators parse. */
export function formatDiagnostic(d: Diagnostic): string {
  const at = d.path ? ` (at ${d.path})` : '';
  return `${d.file}:${d.line}:${d.col}: ${d.severity}: ${d.message}${at}`;
}

export function hasErrors(diagnostics: readonly Diagnostic[]): boolean {
  return diagnostics.some((d) => d.severity === 'error');
}

/** Sort by file, position, then message, so output is stable whatever order checks ran in. */
export function sortDiagnostics(diagnostics: readonly Diagnostic[]): Diagnostic[] {
  return [...diagnostics].sort(
    (a, b) =>
      cmp(a.file, b.file) || a.line - b.line || a.col - b.col || cmp(a.message, b.message),
  );
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export type PathSegment = string | number;

/** `['spec','regions',1,'name']` → `spec.regions[1].name`. */
export function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out ? `.${seg}` : seg;
  }
  return out;
}
