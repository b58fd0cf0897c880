/**
 * Custom resource schemas: what kube-apiserver does with a CRD's openAPIV3Schema on every write, in
 * its order: prune unknown fields (reporting them for fieldValidation), apply `default`s, validate.
 * Validation uses ajv; `x-kubernetes-validations` (CEL) and `format` are not checked.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { StatusCause } from './errors.js';

export interface CrSchema {
  /** Removes fields the schema does not allow (outside apiVersion/kind/metadata); returns their paths. */
  prune(obj: any): string[];
  /** Applies defaults in place, then validates. Returns 422 causes (empty when valid). */
  defaultAndValidate(obj: any): StatusCause[];
}

const ajv = new Ajv({ strict: false, allErrors: true, useDefaults: true, validateFormats: false, logger: false });

/** Copies a structural schema into one ajv reads: int-or-string, metadata left to the server. */
function toAjv(schema: any, root: boolean): any {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return schema;
  const out: any = {};
  for (const [k, v] of Object.entries(schema)) {
    if (k.startsWith('x-kubernetes-')) continue;
    if (k === 'properties' || k === 'patternProperties' || k === 'definitions') {
      out[k] = Object.fromEntries(Object.entries(v as object).map(([pk, pv]) => [pk, root && k === 'properties' && pk === 'metadata' ? { type: 'object' } : toAjv(pv, false)]));
    } else if (k === 'items' || k === 'additionalProperties' || k === 'not' || k === 'additionalItems') {
      out[k] = Array.isArray(v) ? v.map((x) => toAjv(x, false)) : toAjv(v, false);
    } else if (k === 'allOf' || k === 'anyOf' || k === 'oneOf') {
      out[k] = (v as any[]).map((x) => toAjv(x, false));
    } else {
      out[k] = v;
    }
  }
  if (schema['x-kubernetes-int-or-string'] === true && out.type === undefined && out.anyOf === undefined) out.anyOf = [{ type: 'integer' }, { type: 'string' }];
  return out;
}

function fieldPath(instancePath: string): string {
  let out = '';
  for (const seg of instancePath.split('/').slice(1)) {
    const s = seg.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(s) ? `[${s}]` : out === '' ? s : `.${s}`;
  }
  return out;
}

function valueAt(obj: any, instancePath: string): unknown {
  let v = obj;
  for (const seg of instancePath.split('/').slice(1)) v = v?.[seg.replace(/~1/g, '/').replace(/~0/g, '~')];
  return v;
}

function cause(obj: any, e: ErrorObject): StatusCause | undefined {
  let field = fieldPath(e.instancePath);
  const value = valueAt(obj, e.instancePath);
  const shown = JSON.stringify(value);
  const p = e.params as any;
  switch (e.keyword) {
    case 'required':
      field = field ? `${field}.${p.missingProperty}` : p.missingProperty;
      return { reason: 'FieldValueRequired', field, message: 'Required value' };
    case 'enum':
      return { reason: 'FieldValueNotSupported', field, message: `Unsupported value: ${shown}: supported values: ${(p.allowedValues as unknown[]).map((x) => JSON.stringify(x)).join(', ')}` };
    case 'type':
      return { reason: 'FieldValueTypeInvalid', field, message: `Invalid value: "${Array.isArray(value) ? 'array' : value === null ? 'null' : typeof value}": ${field} in body must be of type ${p.type}: ${JSON.stringify(shown)}` };
    case 'maximum':
    case 'minimum':
    case 'exclusiveMaximum':
    case 'exclusiveMinimum': {
      const rel = { maximum: 'less than or equal to', minimum: 'greater than or equal to', exclusiveMaximum: 'less than', exclusiveMinimum: 'greater than' }[e.keyword];
      return { reason: 'FieldValueInvalid', field, message: `Invalid value: ${shown}: ${field} in body should be ${rel} ${p.limit}` };
    }
    case 'pattern':
      return { reason: 'FieldValueInvalid', field, message: `Invalid value: ${shown}: ${field} in body should match '${p.pattern}'` };
    case 'maxLength':
    case 'minLength':
      return { reason: 'FieldValueTooLong', field, message: `Invalid value: ${shown}: ${field} in body should be ${e.keyword === 'maxLength' ? 'at most' : 'at least'} ${p.limit} chars long` };
    case 'maxItems':
    case 'minItems':
      return { reason: 'FieldValueTooMany', field, message: `Invalid value: ${shown}: ${field} in body should have ${e.keyword === 'maxItems' ? 'at most' : 'at least'} ${p.limit} items` };
    case 'anyOf':
    case 'oneOf':
      return undefined; // the branch errors say more
    default:
      return { reason: 'FieldValueInvalid', field, message: `Invalid value: ${shown}: ${e.message ?? e.keyword}` };
  }
}

function prune(value: any, schema: any, path: string, unknown: string[]): void {
  if (!schema || typeof schema !== 'object' || value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    if (schema.items && typeof schema.items === 'object' && !Array.isArray(schema.items)) value.forEach((v, i) => prune(v, schema.items, `${path}[${i}]`, unknown));
    return;
  }
  const preserve = schema['x-kubernetes-preserve-unknown-fields'] === true;
  const embedded = schema['x-kubernetes-embedded-resource'] === true;
  const props: Record<string, unknown> = schema.properties ?? {};
  for (const key of Object.keys(value)) {
    const child = path ? `${path}.${key}` : key;
    if (embedded && (key === 'apiVersion' || key === 'kind' || key === 'metadata')) continue;
    if (Object.hasOwn(props, key)) prune(value[key], props[key], child, unknown);
    else if (schema.additionalProperties && typeof schema.additionalProperties === 'object') prune(value[key], schema.additionalProperties, child, unknown);
    else if (preserve || schema.additionalProperties === true) continue;
    else {
      delete value[key];
      unknown.push(child);
    }
  }
}

export function compileCrdSchema(openAPIV3Schema: any): CrSchema {
  const validate: ValidateFunction = ajv.compile(toAjv(openAPIV3Schema, true));
  return {
    prune(obj) {
      const unknown: string[] = [];
      const props = openAPIV3Schema?.properties ?? {};
      for (const key of Object.keys(obj)) {
        if (key === 'apiVersion' || key === 'kind' || key === 'metadata') continue;
        if (Object.hasOwn(props, key)) prune(obj[key], props[key], key, unknown);
        else if (openAPIV3Schema?.['x-kubernetes-preserve-unknown-fields'] === true) continue;
        else {
          delete obj[key];
          unknown.push(key);
        }
      }
      return unknown;
    },
    defaultAndValidate(obj) {
      if (validate(obj)) return [];
      const causes: StatusCause[] = [];
      const seen = new Set<string>();
      for (const e of validate.errors ?? []) {
        const c = cause(obj, e);
        if (!c) continue;
        const key = `${c.field} ${c.message}`;
        if (seen.has(key)) continue;
        seen.add(key);
        causes.push(c);
      }
      return causes.length ? causes : [{ reason: 'FieldValueInvalid', field: '', message: 'does not match the schema' }];
    },
  };
}
