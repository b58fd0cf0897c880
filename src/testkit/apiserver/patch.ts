/**
 * Patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902), a strategic-merge-patch
 * subset (merge-keyed lists, `$patch`, `$setElementOrder`, `$deleteFromPrimitiveList`,
 * `$retainKeys`), and server-side apply with per-manager field sets recorded in managedFields.
 */
import { ApiError, errors, type StatusCause } from './errors.js';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = Record<string, any>;

export const isObject = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  if (isObject(a)) {
    if (!isObject(b)) return false;
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    return ka.every((k) => Object.hasOwn(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

// ---------------------------------------------------------------- merge patch

export function mergePatch(target: unknown, patch: unknown): any {
  if (!isObject(patch)) return structuredClone(patch);
  const out: Obj = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

// ---------------------------------------------------------------- JSON patch

function invalidPatch(message: string): ApiError {
  return new ApiError(422, 'Invalid', message, { causes: [{ reason: 'FieldValueInvalid', message }] });
}

function parsePointer(p: unknown): string[] {
  if (typeof p !== 'string' || (p !== '' && !p.startsWith('/'))) throw errors.badRequest(`invalid JSON pointer ${JSON.stringify(p)}`);
  if (p === '') return [];
  return p.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function arrayIndex(arr: unknown[], token: string, forAdd: boolean, op: string, path: string): number {
  if (forAdd && token === '-') return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(token)) throw invalidPatch(`${op} operation does not apply: invalid array index ${JSON.stringify(token)} at ${path}`);
  const i = Number(token);
  if (i > arr.length || (!forAdd && i === arr.length)) throw invalidPatch(`${op} operation does not apply: index ${i} out of bounds at ${path}`);
  return i;
}

function getAt(doc: any, tokens: string[], op: string, path: string): any {
  let cur = doc;
  for (const t of tokens) {
    if (Array.isArray(cur)) cur = cur[arrayIndex(cur, t, false, op, path)];
    else if (isObject(cur) && Object.hasOwn(cur, t)) cur = cur[t];
    else throw invalidPatch(`${op} operation does not apply: doc is missing path: ${JSON.stringify(path)}`);
  }
  return cur;
}

function parentOf(doc: any, tokens: string[], op: string, path: string): [any, string] {
  if (tokens.length === 0) throw invalidPatch(`${op} operation does not apply to the document root`);
  const parent = getAt(doc, tokens.slice(0, -1), op, path);
  if (!Array.isArray(parent) && !isObject(parent)) throw invalidPatch(`${op} operation does not apply: doc is missing path: ${JSON.stringify(path)}`);
  return [parent, tokens[tokens.length - 1]!];
}

function addAt(doc: any, tokens: string[], value: unknown, op: string, path: string): any {
  if (tokens.length === 0) return value;
  const [parent, last] = parentOf(doc, tokens, op, path);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, true, op, path), 0, value);
  else parent[last] = value;
  return doc;
}

function removeAt(doc: any, tokens: string[], op: string, path: string): unknown {
  const [parent, last] = parentOf(doc, tokens, op, path);
  if (Array.isArray(parent)) return parent.splice(arrayIndex(parent, last, false, op, path), 1)[0];
  if (!Object.hasOwn(parent, last)) throw invalidPatch(`${op} operation does not apply: doc is missing key: ${path}`);
  const v = parent[last];
  delete parent[last];
  return v;
}

export function jsonPatch(target: unknown, patch: unknown): any {
  if (!Array.isArray(patch)) throw errors.badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let doc = structuredClone(target);
  for (const operation of patch) {
    if (!isObject(operation)) throw errors.badRequest('invalid JSON patch operation: not an object');
    const op = operation.op;
    const path = operation.path;
    const tokens = parsePointer(path);
    switch (op) {
      case 'add':
        if (!Object.hasOwn(operation, 'value')) throw errors.badRequest('add operation missing value');
        doc = addAt(doc, tokens, structuredClone(operation.value), op, path);
        break;
      case 'remove':
        removeAt(doc, tokens, op, path);
        break;
      case 'replace': {
        if (!Object.hasOwn(operation, 'value')) throw errors.badRequest('replace operation missing value');
        if (tokens.length === 0) {
          doc = structuredClone(operation.value);
          break;
        }
        const [parent, last] = parentOf(doc, tokens, op, path);
        if (Array.isArray(parent)) parent[arrayIndex(parent, last, false, op, path)] = structuredClone(operation.value);
        else if (!Object.hasOwn(parent, last)) throw invalidPatch(`replace operation does not apply: doc is missing key: ${path}`);
        else parent[last] = structuredClone(operation.value);
        break;
      }
      case 'move': {
        const from = parsePointer(operation.from);
        const v = removeAt(doc, from, op, operation.from);
        doc = addAt(doc, tokens, v, op, path);
        break;
      }
      case 'copy': {
        const v = getAt(doc, parsePointer(operation.from), op, operation.from);
        doc = addAt(doc, tokens, structuredClone(v), op, path);
        break;
      }
      case 'test': {
        const v = getAt(doc, tokens, op, path);
        if (!deepEqual(v, operation.value)) throw invalidPatch(`testing value ${path} failed: test failed`);
        break;
      }
      default:
        throw errors.badRequest(`Unexpected kind: ${JSON.stringify(op)}`);
    }
  }
  return doc;
}

// ---------------------------------------------------------------- strategic merge patch

/** Merge keys of the built-in lists kubectl sends strategic patches for (from the Go struct tags). */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  volumes: 'name',
  env: 'name',
  imagePullSecrets: 'name',
  volumeMounts: 'mountPath',
  volumeDevices: 'devicePath',
  conditions: 'type',
  ownerReferences: 'uid',
  hostAliases: 'ip',
  topologySpreadConstraints: 'topologyKey',
  resourceClaims: 'name',
};
/** Lists of scalars that strategic merge unions instead of replacing. */
const MERGED_SCALAR_LISTS = new Set(['finalizers']);

function mergeKeyFor(field: string, patchList: unknown[], order: unknown[] | undefined, current: unknown[] | undefined): string | undefined {
  const fromOrder = order?.find(isObject);
  if (fromOrder && Object.keys(fromOrder).length === 1) return Object.keys(fromOrder)[0];
  if (field === 'ports') {
    const items = [...patchList, ...(current ?? [])].filter(isObject);
    if (items.length && items.every((i) => 'containerPort' in i)) return 'containerPort';
    if (items.length && items.every((i) => 'port' in i)) return 'port';
  }
  if (MERGE_KEYS[field]) return MERGE_KEYS[field];
  const items = patchList.filter((i) => !(isObject(i) && i.$patch === 'delete' && Object.keys(i).length === 1));
  if (items.length > 0 && items.every((i) => isObject(i) && typeof i.name === 'string')) return 'name';
  return undefined;
}

function stripDirectives(v: any): any {
  if (Array.isArray(v)) return v.filter((x) => !(isObject(x) && x.$patch === 'delete')).map(stripDirectives);
  if (!isObject(v)) return v;
  const out: Obj = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith('$')) out[k] = stripDirectives(x);
  return out;
}

function applyOrder(list: unknown[], order: unknown[], key: string | undefined): unknown[] {
  const id = (x: unknown): string => JSON.stringify(key && isObject(x) ? x[key] : x);
  const rank = new Map(order.map((o, i) => [id(o), i]));
  const ranked = list.filter((x) => rank.has(id(x))).sort((a, b) => rank.get(id(a))! - rank.get(id(b))!);
  const rest = list.filter((x) => !rank.has(id(x)));
  return [...ranked, ...rest];
}

function smpList(field: string, current: unknown, patch: unknown[], order: unknown[] | undefined): unknown[] {
  const cur = Array.isArray(current) ? current : [];
  const replace = patch.some((p) => isObject(p) && p.$patch === 'replace');
  if (replace) return stripDirectives(patch.filter((p) => !(isObject(p) && p.$patch === 'replace')));
  if (MERGED_SCALAR_LISTS.has(field) && patch.every((p) => !isObject(p))) {
    const out = [...cur];
    for (const p of patch) if (!out.some((c) => deepEqual(c, p))) out.push(p);
    return order ? applyOrder(out, order, undefined) : out;
  }
  const key = mergeKeyFor(field, patch, order, cur);
  if (!key) return stripDirectives(patch);
  const out: unknown[] = cur.map((c) => structuredClone(c));
  for (const p of patch) {
    if (!isObject(p)) continue;
    const idx = out.findIndex((c) => isObject(c) && deepEqual(c[key], p[key]));
    if (p.$patch === 'delete') {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (idx >= 0) out[idx] = strategicMergePatch(out[idx], p);
    else out.push(stripDirectives(p));
  }
  return order ? applyOrder(out, order, key) : out;
}

export function strategicMergePatch(target: unknown, patch: unknown): any {
  if (!isObject(patch)) return structuredClone(patch);
  if (patch.$patch === 'replace') return stripDirectives(patch);
  if (patch.$patch === 'delete') return undefined;
  const out: Obj = isObject(target) ? { ...target } : {};
  const orders = new Map<string, unknown[]>();
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$setElementOrder/') && Array.isArray(v)) orders.set(k.slice('$setElementOrder/'.length), v);
  }
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$deleteFromPrimitiveList/') && Array.isArray(v)) {
      const field = k.slice('$deleteFromPrimitiveList/'.length);
      if (Array.isArray(out[field])) out[field] = out[field].filter((x: unknown) => !v.some((d) => deepEqual(d, x)));
      continue;
    }
    if (k.startsWith('$')) continue;
    if (v === null) delete out[k];
    else if (Array.isArray(v)) out[k] = smpList(k, out[k], v, orders.get(k));
    else if (isObject(v)) {
      const merged = strategicMergePatch(out[k], v);
      if (merged === undefined) delete out[k];
      else out[k] = merged;
    } else out[k] = v;
  }
  for (const [field, order] of orders) if (!Object.hasOwn(patch, field) && Array.isArray(out[field])) out[field] = applyOrder(out[field], order, mergeKeyFor(field, [], order, out[field]));
  if (Array.isArray(patch.$retainKeys)) for (const k of Object.keys(out)) if (!patch.$retainKeys.includes(k)) delete out[k];
  return out;
}

// ---------------------------------------------------------------- server-side apply

/** FieldsV1 path segments: `f:name`, `k:{"name":"x"}` (keyed list item), `v:<json>` unused (scalar lists are atomic here). */
type Path = string[];
const keyOf = (p: Path): string => JSON.stringify(p);

/** Fields apply never tracks or changes. */
const UNTRACKED_META = new Set(['name', 'namespace', 'uid', 'resourceVersion', 'generation', 'creationTimestamp', 'managedFields', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'selfLink', 'generateName']);

function listKey(field: string, list: unknown[]): string | undefined {
  if (list.length === 0 || !list.every(isObject)) return undefined;
  if (field === 'ports') {
    if (list.every((i) => 'containerPort' in i)) return 'containerPort';
    if (list.every((i) => 'port' in i)) return 'port';
  }
  const k = MERGE_KEYS[field] ?? 'name';
  return list.every((i) => (i as Obj)[k] !== undefined) ? k : undefined;
}

/** Leaf paths of an applied configuration (maps and keyed lists recurse; scalars, atomic lists and empty maps are leaves). */
function leafPaths(v: unknown, path: Path, out: Map<string, Path>, root = true): void {
  if (isObject(v)) {
    const keys = Object.keys(v).filter((k) => !(root && (k === 'apiVersion' || k === 'kind')));
    if (keys.length === 0 && !root) out.set(keyOf(path), path);
    for (const k of keys) {
      if (path.length === 1 && path[0] === 'f:metadata' && UNTRACKED_META.has(k)) continue;
      const child = [...path, `f:${k}`];
      const x = v[k];
      if (Array.isArray(x)) {
        const key = listKey(k, x);
        if (key === undefined) out.set(keyOf(child), child);
        else for (const item of x) leafPaths(item, [...child, `k:${JSON.stringify({ [key]: (item as Obj)[key] })}`], out, false);
      } else leafPaths(x, child, out, false);
    }
    return;
  }
  out.set(keyOf(path), path);
}

function locate(obj: any, path: Path): { parent: any; at: string | number } | undefined {
  let cur = obj;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    let at: string | number;
    if (seg.startsWith('f:')) {
      if (!isObject(cur)) return undefined;
      at = seg.slice(2);
    } else {
      if (!Array.isArray(cur)) return undefined;
      const want = JSON.parse(seg.slice(2)) as Obj;
      const [k, v] = Object.entries(want)[0]!;
      at = cur.findIndex((x) => isObject(x) && deepEqual(x[k], v));
      if (at < 0) return undefined;
    }
    if (i === path.length - 1) return { parent: cur, at };
    cur = (cur as any)[at];
  }
  return undefined;
}

function valueAtPath(obj: any, path: Path): unknown {
  const loc = locate(obj, path);
  return loc ? loc.parent[loc.at] : undefined;
}

function removePath(obj: any, path: Path): void {
  const loc = locate(obj, path);
  if (!loc) return;
  if (Array.isArray(loc.parent)) loc.parent.splice(loc.at as number, 1);
  else delete loc.parent[loc.at];
  // A keyed list item left with only its key, or a map left empty, goes too.
  if (path.length > 1) {
    const parentPath = path.slice(0, -1);
    const pv = valueAtPath(obj, parentPath);
    const last = parentPath[parentPath.length - 1]!;
    if (isObject(pv) && (Object.keys(pv).length === 0 || (last.startsWith('k:') && Object.keys(pv).length === 1 && Object.keys(JSON.parse(last.slice(2)))[0] === Object.keys(pv)[0])))
      removePath(obj, parentPath);
    else if (Array.isArray(pv) && pv.length === 0) removePath(obj, parentPath);
  }
}

/** Merges an applied configuration: maps recurse, keyed lists merge by key, everything else is replaced. */
function applyMerge(current: unknown, applied: unknown, field = ''): unknown {
  if (isObject(applied)) {
    const out: Obj = isObject(current) ? { ...current } : {};
    for (const [k, v] of Object.entries(applied)) out[k] = applyMerge(out[k], v, k);
    return out;
  }
  if (Array.isArray(applied)) {
    const key = listKey(field, applied);
    if (!key || !Array.isArray(current)) return structuredClone(applied);
    const out = current.map((c) => structuredClone(c));
    for (const a of applied) {
      const idx = out.findIndex((c) => isObject(c) && deepEqual(c[key], (a as Obj)[key]));
      if (idx >= 0) out[idx] = applyMerge(out[idx], a);
      else out.push(structuredClone(a));
    }
    return out;
  }
  return applied;
}

/** FieldsV1 JSON from paths. */
function toFieldsV1(paths: Iterable<Path>): Obj {
  const root: Obj = {};
  for (const p of paths) {
    let cur = root;
    for (const seg of p) cur = cur[seg] ??= {};
  }
  // Mark items and non-leaf maps that exist as nodes, as kube-apiserver does for keyed list items.
  const mark = (node: Obj): void => {
    for (const [k, v] of Object.entries(node)) {
      if (k.startsWith('k:') && Object.keys(v).length > 0) v['.'] = {};
      mark(v);
    }
  };
  mark(root);
  return root;
}

function fromFieldsV1(f: unknown, prefix: Path = [], out: Path[] = []): Path[] {
  if (!isObject(f)) return out;
  const children = Object.keys(f).filter((k) => k !== '.');
  if (children.length === 0 && prefix.length > 0) out.push(prefix);
  for (const k of children) fromFieldsV1(f[k], [...prefix, k], out);
  return out;
}

export interface ManagedFieldsEntry {
  manager: string;
  operation: 'Apply' | 'Update';
  apiVersion: string;
  time: string;
  fieldsType: 'FieldsV1';
  fieldsV1: Obj;
  subresource?: string;
}

export interface ApplyResult {
  object: Obj;
  managedFields: ManagedFieldsEntry[];
}

/** Same field, or one contains the other. */
function overlaps(a: string, b: string): boolean {
  return a === b || a.startsWith(b.slice(0, -1) + ',') || b.startsWith(a.slice(0, -1) + ',');
}

/**
 * managedFields after a non-apply write (create, update, patch) by `manager`: it takes ownership
 * of every field whose value it changed; changed and removed fields leave their other owners.
 * `base` is the object's current managedFields (or those the client sent, as kube-apiserver
 * accepts them on update).
 */
export function recordUpdate(base: readonly ManagedFieldsEntry[], old: Obj | undefined, next: Obj, manager: string, apiVersion: string, now: string, subresource?: string): ManagedFieldsEntry[] {
  const newPaths = new Map<string, Path>();
  leafPaths(next, [], newPaths);
  let changed: Map<string, Path>;
  let removed: string[] = [];
  if (!old) changed = newPaths;
  else {
    const oldPaths = new Map<string, Path>();
    leafPaths(old, [], oldPaths);
    changed = new Map([...newPaths].filter(([k, p]) => !oldPaths.has(k) || !deepEqual(valueAtPath(old, p), valueAtPath(next, p))));
    removed = [...oldPaths.keys()].filter((k) => !newPaths.has(k));
  }
  if (changed.size === 0 && removed.length === 0) return structuredClone([...base]);
  const touched = [...changed.keys(), ...removed];
  const sameSub = (e: ManagedFieldsEntry): boolean => (e.subresource ?? '') === (subresource ?? '');
  const out: ManagedFieldsEntry[] = [];
  let mine: Path[] = [];
  let mineAt = -1;
  for (const e of base) {
    const kept = fromFieldsV1(e.fieldsV1).filter((p) => !touched.some((t) => overlaps(keyOf(p), t)));
    if (e.manager === manager && e.operation === 'Update' && sameSub(e)) {
      mine = kept;
      mineAt = out.length;
      continue;
    }
    if (kept.length) out.push({ ...structuredClone(e), fieldsV1: toFieldsV1(kept) });
  }
  const all = new Map<string, Path>([...mine.map((p) => [keyOf(p), p] as [string, Path]), ...changed]);
  if (all.size) {
    const entry: ManagedFieldsEntry = { manager, operation: 'Update', apiVersion, time: now, fieldsType: 'FieldsV1', fieldsV1: toFieldsV1(all.values()), ...(subresource ? { subresource } : {}) };
    if (mineAt >= 0) out.splice(mineAt, 0, entry);
    else out.push(entry);
  }
  return out;
}

/**
 * Server-side apply of `applied` by `manager` onto `current` (undefined: create). A field another
 * manager (Apply or Update) owns with a different value is a 409 Conflict unless `force`, which
 * takes it over; fields this manager applied before and no longer applies are removed unless
 * another manager still owns them. Returns the object and its complete managedFields.
 */
export function serverSideApply(current: Obj | undefined, applied: Obj, manager: string, force: boolean, apiVersion: string, now: string, subresource?: string): ApplyResult {
  const appliedPaths = new Map<string, Path>();
  leafPaths(applied, [], appliedPaths);
  const entries: ManagedFieldsEntry[] = structuredClone(current?.metadata?.managedFields ?? []);
  const sameSub = (e: ManagedFieldsEntry): boolean => (e.subresource ?? '') === (subresource ?? '');
  const mine = entries.find((e) => e.manager === manager && e.operation === 'Apply' && sameSub(e));
  const others = entries.filter((e) => e !== mine);
  const conflicts: StatusCause[] = [];
  const othersOwned = new Map<ManagedFieldsEntry, Map<string, Path>>();
  for (const o of others) othersOwned.set(o, new Map(fromFieldsV1(o.fieldsV1).map((p) => [keyOf(p), p])));
  if (current) {
    for (const [k, p] of appliedPaths) {
      for (const [o, owned] of othersOwned) {
        if (![...owned.keys()].some((ok) => overlaps(ok, k))) continue;
        if (deepEqual(valueAtPath(current, p), valueAtPath(applied, p))) continue;
        if (force) {
          for (const ok of [...owned.keys()]) if (overlaps(ok, k)) owned.delete(ok);
        } else {
          const field = '.' + p.map((s) => (s.startsWith('f:') ? s.slice(2) : `[${s.slice(2)}]`)).join('.').replace(/\.\[/g, '[');
          conflicts.push({ reason: 'FieldManagerConflict', message: `conflict with "${o.manager}"${o.subresource ? ` with subresource "${o.subresource}"` : ''} using ${o.apiVersion}: ${field}`, field });
        }
      }
    }
  }
  if (conflicts.length) {
    const n = conflicts.length;
    throw new ApiError(409, 'Conflict', `Apply failed with ${n} conflict${n === 1 ? '' : 's'}: ${conflicts.map((c) => c.message).join('\n')}`, { causes: conflicts });
  }
  let object: Obj = current ? structuredClone(current) : {};
  if (mine && current) {
    const stillOwned = new Set<string>();
    for (const owned of othersOwned.values()) for (const k of owned.keys()) stillOwned.add(k);
    for (const p of fromFieldsV1(mine.fieldsV1)) {
      const k = keyOf(p);
      if (appliedPaths.has(k) || stillOwned.has(k)) continue;
      if (p[0] === 'f:metadata' && p.length === 2 && UNTRACKED_META.has(p[1]!.slice(2))) continue;
      removePath(object, p);
    }
  }
  object = applyMerge(object, applied) as Obj;
  const result: ManagedFieldsEntry[] = [];
  for (const [o, owned] of othersOwned) if (owned.size > 0) result.push({ ...o, fieldsV1: toFieldsV1(owned.values()) });
  result.push({ manager, operation: 'Apply', apiVersion, time: now, fieldsType: 'FieldsV1', fieldsV1: toFieldsV1(appliedPaths.values()), ...(subresource ? { subresource } : {}) });
  return { object, managedFields: result };
}
