/**
 * Schema validation with ajv, reported as positioned diagnostics a person can act on.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { formatPath, type PathSegment, quote } from './diagnostics.js';
import { topologySchema } from './schema.js';
import type { Finding } from './check.js';

/**
 * Two validators of the same schema: a lean one that stops at the first error decides, and the
 * verbose all-errors one (several times slower on a 1,000-region file) runs only on invalid input.
 */
const validators = new Map<'check' | 'explain', ValidateFunction>();

function validator(kind: 'check' | 'explain'): ValidateFunction {
  let v = validators.get(kind);
  if (!v) {
    const explain = kind === 'explain';
    const ajv = new Ajv({ allErrors: explain, verbose: explain, strict: true, allowUnionTypes: true });
    ajv.addVocabulary(['x-hint', 'x-length-hint']);
    v = ajv.compile(topologySchema);
    validators.set(kind, v);
  }
  return v;
}

/** Schema findings for `data`; empty when valid. */
export function validateSchema(data: unknown): Finding[] {
  if (validator('check')(data)) return [];
  const validate = validator('explain');
  if (validate(data)) return [];
  const errors = (validate.errors ?? []).filter((e) => !isNoise(e));
  const findings = errors.map(toFinding);
  // One finding per path and message: ajv reports some failures once per branch.
  const seen = new Set<string>();
  return findings.filter((f) => {
    const key = `${f.path.join('\u0000')}|${f.message}`;
    return seen.has(key) ? false : (seen.add(key), true);
  });
}

/** `if`/`dependencies` wrappers repeat what their inner errors already say. */
function isNoise(e: ErrorObject): boolean {
  // `propertyNames` wraps the error of the key's own schema (pattern, maxLength), reported with the key.
  return e.keyword === 'if' || e.keyword === 'propertyNames';
}

function pointerToPath(pointer: string): PathSegment[] {
  if (!pointer) return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function toFinding(e: ErrorObject): Finding {
  const path = pointerToPath(e.instancePath);
  const last = path[path.length - 1];
  // A list entry is named with its list (`nodes[1]`), not by its bare index.
  const field = last === undefined ? 'document' : typeof last === 'number' ? `${String(path[path.length - 2] ?? '')}[${last}]` : String(last);
  const hint = (e.parentSchema as { 'x-hint'?: string } | undefined)?.['x-hint'];
  const got = describeValue(e.data);
  switch (e.keyword) {
    case 'additionalProperties': {
      const extra = String(e.params.additionalProperty);
      const known = Object.keys((e.parentSchema as { properties?: object }).properties ?? {});
      return { path: [...path, extra], severity: 'error', atKey: true, message: unknownFieldMessage(extra, known, path) };
    }
    case 'required':
      return {
        path,
        severity: 'error',
        message: `missing required field "${String(e.params.missingProperty)}"${path.length ? ` in ${field}` : ''}; add it`,
      };
    case 'dependencies':
      return {
        path: [...path, String(e.params.property)],
        severity: 'error',
        atKey: true,
        message: `"${String(e.params.property)}" needs "${String(e.params.missingProperty)}" next to it; add ${String(e.params.missingProperty)}, or remove ${String(e.params.property)}`,
      };
    case 'enum':
      return {
        path,
        severity: 'error',
        message: `${field} must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')} (got ${got})`,
      };
    case 'const':
      return { path, severity: 'error', message: `${field} must be ${JSON.stringify(e.params.allowedValue)} (got ${got})` };
    case 'type':
      if (SECRET_LIKE.test(field) && typeof e.data === 'string') {
        return { path, severity: 'error', message: `${field} is an inline secret; secrets never go in git: create a Secret in the cluster and reference it (${field}: {secretRef: {name, key}})` };
      }
      return { path, severity: 'error', message: `${field} must be ${article(String(e.params.type))} (got ${got})` };
    case 'pattern':
      if (e.propertyName !== undefined) {
        // A key failed propertyNames: point at the key, and say it is a key.
        return { path: [...path, e.propertyName], severity: 'error', atKey: true, message: `key ${quote(e.propertyName)} of ${field} is not valid: ${hint ?? `it must match ${String(e.params.pattern)}`}` };
      }
      return { path, severity: 'error', message: `${field} ${got} is not valid: ${hint ?? `it must match ${String(e.params.pattern)}`}` };
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return { path, severity: 'error', message: `${field} ${got} is out of range: it must be ${String(e.params.comparison)} ${String(e.params.limit)}` };
    case 'maxLength': {
      // Not the pattern's x-hint: it may quote a different length (region names allow 60, the DNS-label hint says 63).
      const why = (e.parentSchema as { 'x-length-hint'?: string } | undefined)?.['x-length-hint'];
      return { path, severity: 'error', message: `${field} is too long (at most ${String(e.params.limit)} characters${why ? `: ${why}` : ''})` };
    }
    case 'minLength':
      return { path, severity: 'error', message: `${field} must not be empty` };
    case 'minItems':
      return { path, severity: 'error', message: `${field} needs at least ${String(e.params.limit)} entr${e.params.limit === 1 ? 'y' : 'ies'}` };
    case 'minProperties':
      return { path, severity: 'error', message: `${field} must not be empty; remove it or add entries` };
    case 'uniqueItems': {
      // ajv's two loops disagree on which of i and j is the later entry; point at the later one, the repeat.
      const [first, repeat] = [Number(e.params.i), Number(e.params.j)].sort((x, y) => x - y) as [number, number];
      return { path: [...path, repeat], severity: 'error', message: `${field} lists the same value twice (entries ${first} and ${repeat}); remove the repeat` };
    }
    default:
      return { path, severity: 'error', message: `${field} ${e.message ?? 'is invalid'}` };
  }
}

const SECRET_LIKE = /(psk|password|passwd|secret|token|private.?key|credential)/i;

function unknownFieldMessage(extra: string, known: string[], parent: PathSegment[]): string {
  if (SECRET_LIKE.test(extra)) {
    // Only vpn.psk takes a {name, key} reference; Git credentials are the GitOps tool's business.
    const how = parent[0] === 'spec' && parent[1] === 'gitops'
      ? 'put Git credentials in a Secret named by gitops.flux.secretRef, or in Argo CD\'s repository credentials'
      : 'create a Secret in the cluster and reference it (vpn.psk.secretRef: {name, key})';
    return `${quote(extra)} looks like an inline secret; secrets never go in git: ${how}`;
  }
  const where = parent.length ? ` in ${formatPath(parent)}` : ' at the top level';
  const suggestion = closest(extra, known);
  const allowed = known.length ? `; allowed: ${known.join(', ')}` : '';
  return `unknown field ${quote(extra)}${where}${suggestion ? `; did you mean "${suggestion}"?` : allowed}`;
}

function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string') return quote(v.length > 60 ? `${v.slice(0, 57)}...` : v);
  return String(v);
}

function article(type: string): string {
  const names: Record<string, string> = { object: 'a mapping', array: 'a list', integer: 'an integer', boolean: 'true or false', string: 'a string', number: 'a number' };
  return type.split(',').map((t) => names[t] ?? t).join(' or ');
}
