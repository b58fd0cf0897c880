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

/**
 * `file:line:col: severity: message (at path)`, one line, the shape editors and CI annotators parse.
 * File names, messages and paths may carry text from the user (a file name, an unknown field's
 * name): control and line-breaking characters in them are escaped, so one diagnostic is one line
 * and cannot forge another.
 */
export function formatDiagnostic(d: Diagnostic): string {
  const at = d.path ? ` (at ${escapeUnprintable(d.path)})` : '';
  return `${printable(d.file)}:${d.line}:${d.col}: ${d.severity}: ${escapeUnprintable(d.message)}${at}`;
}

/**
 * Characters that break a line or a terminal's rendering: C0 and C1 controls and DEL, the Unicode
 * line and paragraph separators (line breaks to YAML 1.1 parsers such as go-yaml), bidirectional
 * overrides and the BOM.
 */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/;
const UNPRINTABLE_ALL = new RegExp(UNPRINTABLE.source, 'g');

function escapeChar(c: string): string {
  const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
  return named[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
}

/** `s` with every unprintable character written as a JSON-style escape (`\n`, `\u2028`). */
export function escapeUnprintable(s: string): string {
  return UNPRINTABLE.test(s) ? s.replace(UNPRINTABLE_ALL, escapeChar) : s;
}

/** A JSON-style quoted string, with the characters JSON leaves raw (`\u2028`, bidi overrides) escaped too. */
export function quote(s: string): string {
  return escapeUnprintable(JSON.stringify(s));
}

/**
 * A name from outside (a file path) as it is shown in messages and generated headers: verbatim when
 * it is printable, which keeps every ordinary name unchanged, and quoted with escapes otherwise.
 */
export function printable(s: string): string {
  return UNPRINTABLE.test(s) ? quote(s) : s;
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
