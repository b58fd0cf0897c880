/**
 * Label selectors (`k=v,k!=v,k in (a,b),k notin (a),k,!k,k>1`) and field selectors
 * (`metadata.name=x,metadata.namespace!=y`), parsed and matched as kube-apiserver does.
 * Parse errors throw 400 BadRequest.
 */
import { errors } from './errors.js';
import type { ResourceType } from './registry.js';

type Op = '=' | '!=' | 'in' | 'notin' | 'exists' | '!' | '>' | '<';
interface Requirement {
  key: string;
  op: Op;
  values: string[];
}
export type LabelSelector = readonly Requirement[];

const NAME = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$/;
const PREFIX = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** Label key syntax: optional DNS-subdomain prefix (≤253) + "/" + name (≤63). Returns a problem or undefined. */
export function labelKeyProblem(key: string): string | undefined {
  const slash = key.indexOf('/');
  const [prefix, name] = slash >= 0 ? [key.slice(0, slash), key.slice(slash + 1)] : [undefined, key];
  if (prefix !== undefined && (prefix.length === 0 || prefix.length > 253 || !PREFIX.test(prefix))) return 'prefix part must be a lowercase RFC 1123 subdomain';
  if (name.length === 0 || name.length > 63 || !NAME.test(name))
    return "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (max 63 characters)";
  return undefined;
}

export function labelValueProblem(value: string): string | undefined {
  if (value.length > 63 || !VALUE.test(value)) return "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (max 63 characters)";
  return undefined;
}

function bad(selector: string, why: string): never {
  throw errors.badRequest(`unable to parse requirement: ${why} (in selector ${JSON.stringify(selector)})`);
}

/** Splits on commas outside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

export function parseLabelSelector(selector: string | undefined): LabelSelector {
  if (selector === undefined || selector.trim() === '') return [];
  const reqs: Requirement[] = [];
  for (const raw of splitTop(selector)) {
    const part = raw.trim();
    if (part === '') bad(selector, 'found \'\', expected: identifier');
    let m: RegExpExecArray | null;
    let req: Requirement;
    if ((m = /^!\s*([^\s=!<>(),]+)$/.exec(part))) req = { key: m[1]!, op: '!', values: [] };
    else if ((m = /^([^\s=!<>(),]+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(part)))
      req = { key: m[1]!, op: m[2] as Op, values: m[3]!.split(',').map((v) => v.trim()) };
    else if ((m = /^([^\s=!<>(),]+)\s*(==|=|!=)\s*([^\s=!<>(),]*)$/.exec(part))) req = { key: m[1]!, op: m[2] === '!=' ? '!=' : '=', values: [m[3]!] };
    else if ((m = /^([^\s=!<>(),]+)\s*([<>])\s*([^\s=!<>(),]*)$/.exec(part))) {
      if (!/^-?\d+$/.test(m[3]!)) bad(selector, `for 'Gt', 'Lt' operators, the value must be an integer`);
      req = { key: m[1]!, op: m[2] as Op, values: [m[3]!] };
    } else if ((m = /^([^\s=!<>(),]+)$/.exec(part))) req = { key: m[1]!, op: 'exists', values: [] };
    else bad(selector, `cannot parse ${JSON.stringify(part)}`);
    const kp = labelKeyProblem(req.key);
    if (kp) bad(selector, `invalid label key ${JSON.stringify(req.key)}: ${kp}`);
    if (req.op === 'in' || req.op === 'notin' || req.op === '=' || req.op === '!=')
      for (const v of req.values) {
        const vp = labelValueProblem(v);
        if (vp) bad(selector, `invalid label value: ${JSON.stringify(v)}: ${vp}`);
      }
    reqs.push(req);
  }
  return reqs;
}

export function matchesLabels(selector: LabelSelector, labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  for (const r of selector) {
    const has = Object.hasOwn(l, r.key);
    const v = l[r.key];
    switch (r.op) {
      case '=':
        if (!has || v !== r.values[0]) return false;
        break;
      case '!=':
        if (has && v === r.values[0]) return false;
        break;
      case 'in':
        if (!has || !r.values.includes(v!)) return false;
        break;
      case 'notin':
        if (has && r.values.includes(v!)) return false;
        break;
      case 'exists':
        if (!has) return false;
        break;
      case '!':
        if (has) return false;
        break;
      case '>':
      case '<': {
        if (!has || !/^-?\d+$/.test(v!)) return false;
        const n = Number(v);
        const limit = Number(r.values[0]);
        if (r.op === '>' ? !(n > limit) : !(n < limit)) return false;
        break;
      }
    }
  }
  return true;
}

interface FieldRequirement {
  field: string;
  negate: boolean;
  value: string;
}
export type FieldSelector = readonly FieldRequirement[];

function unescapeField(s: string): string {
  return s.replace(/\\(.)/g, '$1');
}

/** Splits on unescaped `sep`. */
function splitUnescaped(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    if (ch === '\\' && i + 1 < s.length) {
      cur += ch + s[i + 1];
      i++;
    } else if (ch === sep) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

export function parseFieldSelector(selector: string | undefined, type: ResourceType): FieldSelector {
  if (selector === undefined || selector.trim() === '') return [];
  const out: FieldRequirement[] = [];
  for (const part of splitUnescaped(selector, ',')) {
    const m = /^([^=!]+?)\s*(==|=|!=)\s*(.*)$/s.exec(part.trim());
    if (!m) throw errors.badRequest(`invalid selector: '${selector}'; can't understand '${part}'`);
    const field = m[1]!.trim();
    if (field !== 'metadata.name' && field !== 'metadata.namespace' && !type.fieldSelectors?.[field])
      throw errors.badRequest(`field label not supported: ${field}`);
    out.push({ field, negate: m[2] === '!=', value: unescapeField(m[3]!) });
  }
  return out;
}

export function matchesFields(selector: FieldSelector, type: ResourceType, obj: any): boolean {
  for (const r of selector) {
    let actual: string | undefined;
    if (r.field === 'metadata.name') actual = obj.metadata?.name ?? '';
    else if (r.field === 'metadata.namespace') actual = obj.metadata?.namespace ?? '';
    else actual = type.fieldSelectors?.[r.field]?.(obj) ?? '';
    if ((actual === r.value) === r.negate) return false;
  }
  return true;
}

/** A single-object name from `metadata.name=x` in a field selector, to narrow a watch or list. */
export function nameFromFieldSelector(selector: FieldSelector): string | undefined {
  return selector.find((r) => r.field === 'metadata.name' && !r.negate)?.value;
}
