/**
 * Object storage with etcd-like revisions: one global resourceVersion counter, a bounded event
 * history (compaction → 410 Expired), snapshots at a past revision for Exact lists and continue
 * tokens, and the write semantics of kube-apiserver's generic registry: create / update / patch /
 * apply / delete with preconditions, status subresource, generation, finalizers, namespace and CRD
 * lifecycles. Everything here is synchronous, so each operation is atomic.
 */
import { randomUUID, randomInt } from 'node:crypto';
import { ApiError, errors, type StatusCause } from './errors.js';
import { deepEqual, isObject, jsonPatch, mergePatch, recordUpdate, serverSideApply, strategicMergePatch, type ManagedFieldsEntry } from './patch.js';
import { apiVersionOf, Registry, validateCrd, type ResourceType } from './registry.js';
import { labelKeyProblem, labelValueProblem, matchesFields, matchesLabels, type FieldSelector, type LabelSelector } from './selectors.js';

export type Obj = Record<string, any>;
export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoredEvent {
  readonly rv: number;
  readonly type: EventType;
  readonly storageKey: string;
  readonly namespace: string;
  /** New state (for DELETED: the last state, stamped with the deletion revision). */
  readonly object: Obj;
  /** State before the event; undefined for ADDED. */
  readonly prev?: Obj;
}

export type FieldValidation = 'Strict' | 'Warn' | 'Ignore';

export interface WriteOptions {
  dryRun?: boolean;
  /** The fieldManager query parameter. */
  fieldManager?: string;
  /** Manager for non-apply writes without fieldManager (kube-apiserver uses the User-Agent up to the first "/"). */
  defaultManager?: string;
  fieldValidation?: FieldValidation;
}

export interface WriteResult {
  object: Obj;
  warnings: string[];
  /** 201 for creates (POST, or apply that created). */
  created?: boolean;
}

export interface ListOptions {
  labelSelector?: LabelSelector;
  fieldSelector?: FieldSelector;
  resourceVersion?: string;
  resourceVersionMatch?: string;
  limit?: number;
  continueToken?: string;
}

export interface ListResult {
  items: Obj[];
  resourceVersion: string;
  continueToken?: string;
  remainingItemCount?: number;
}

export type PatchType = 'merge' | 'json' | 'strategic' | 'apply';

const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const GENERATE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** Namespaces kube-apiserver creates at start. */
export const SYSTEM_NAMESPACES = ['default', 'kube-node-lease', 'kube-public', 'kube-system'];

const nsKey = (namespace: string, name: string): string => `${namespace}/${name}`;
export const nowRfc3339 = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

function managerOf(opts: WriteOptions): string {
  return opts.fieldManager || opts.defaultManager || 'unknown';
}

/** The object without the fields that never count as a change (resourceVersion, managedFields timestamps). */
function comparable(obj: Obj): Obj {
  const { resourceVersion: _rv, managedFields, ...meta } = obj.metadata ?? {};
  return { ...obj, metadata: { ...meta, managedFields: (managedFields ?? []).map(({ time: _t, ...m }: Obj) => m) } };
}

/** Spec-like content: everything except metadata and status (generation bumps when this changes). */
function specOf(obj: Obj): Obj {
  const { metadata: _m, status: _s, apiVersion: _a, kind: _k, ...rest } = obj;
  return rest;
}

export class Store {
  readonly registry = new Registry();
  private rv = 0;
  /** Every event with rv > compactRev is in history. */
  private compactRev = 0;
  private readonly history: StoredEvent[] = [];
  private readonly data = new Map<string, Map<string, Obj>>();
  private readonly listeners = new Set<(e: StoredEvent) => void>();
  private readonly unregisterListeners = new Set<(types: ResourceType[]) => void>();
  private nextServiceIP = 10;

  constructor(private historyLimit = 1000) {
    for (const name of SYSTEM_NAMESPACES) this.create(this.type('', 'v1', 'namespaces'), '', { metadata: { name } }, { defaultManager: 'kube-apiserver' });
  }

  // ------------------------------------------------------------ revisions and history

  get resourceVersion(): string {
    return String(this.rv);
  }

  /** Oldest resourceVersion a watch may resume from. */
  get compactedResourceVersion(): string {
    return String(this.compactRev);
  }

  setHistoryLimit(n: number): void {
    this.historyLimit = Math.max(0, n);
    this.trim();
  }

  /**
   * Advances the revision by one, as a write to some other key would, and forgets all history up
   * to it: every resourceVersion handed out before is now too old (watch, Exact list, continue →
   * 410), so every watcher that resumes must relist. Returns the compaction revision.
   */
  compact(): string {
    this.rv++;
    this.compactRev = this.rv;
    this.history.length = 0;
    return String(this.compactRev);
  }

  private trim(): void {
    while (this.history.length > this.historyLimit) this.compactRev = this.history.shift()!.rv;
  }

  /** Events after `rv`, or 'expired' when history no longer reaches back that far. */
  eventsSince(rv: number): StoredEvent[] | 'expired' {
    if (rv < this.compactRev) return 'expired';
    const i = this.history.findIndex((e) => e.rv > rv);
    return i < 0 ? [] : this.history.slice(i);
  }

  subscribe(fn: (e: StoredEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Called when a CRD's resources go away (watchers of them are closed). */
  onUnregister(fn: (types: ResourceType[]) => void): () => void {
    this.unregisterListeners.add(fn);
    return () => this.unregisterListeners.delete(fn);
  }

  private emit(type: EventType, t: ResourceType, object: Obj, prev?: Obj): void {
    const e: StoredEvent = { rv: this.rv, type, storageKey: t.storageKey, namespace: object.metadata.namespace ?? '', object, ...(prev ? { prev } : {}) };
    this.history.push(e);
    this.trim();
    for (const l of [...this.listeners]) l(e);
  }

  // ------------------------------------------------------------ reads

  type(group: string, version: string, resource: string): ResourceType {
    const t = this.registry.lookup(group, version, resource);
    if (!t) throw errors.pathNotFound(`${apiVersionOf(group, version)}/${resource}`);
    return t;
  }

  private bucket(t: ResourceType): Map<string, Obj> {
    let b = this.data.get(t.storageKey);
    if (!b) this.data.set(t.storageKey, (b = new Map()));
    return b;
  }

  /** The stored object as seen through type `t` (apiVersion of the requested version). */
  present(t: ResourceType, obj: Obj): Obj {
    const apiVersion = apiVersionOf(t.group, t.version);
    return obj.apiVersion === apiVersion && obj.kind === t.kind ? obj : { ...obj, apiVersion, kind: t.kind };
  }

  private find(t: ResourceType, namespace: string, name: string): Obj | undefined {
    return this.bucket(t).get(nsKey(t.namespaced ? namespace : '', name));
  }

  get(t: ResourceType, namespace: string, name: string): Obj {
    const o = this.find(t, namespace, name);
    if (!o) throw errors.notFound(t.group, t.resource, name);
    return this.present(t, o);
  }

  /** Objects of a type at revision `rv` (current state rolled back through history). */
  private snapshot(t: ResourceType, rv: number): Map<string, Obj> {
    const current = this.bucket(t);
    if (rv >= this.rv) return current;
    if (rv < this.compactRev) throw errors.expired(`too old resource version: ${rv} (${this.compactRev})`);
    const snap = new Map(current);
    for (let i = this.history.length - 1; i >= 0 && this.history[i]!.rv > rv; i--) {
      const e = this.history[i]!;
      if (e.storageKey !== t.storageKey) continue;
      const key = nsKey(e.namespace, e.object.metadata.name);
      if (e.type === 'ADDED') snap.delete(key);
      else snap.set(key, e.prev!);
    }
    return snap;
  }

  list(t: ResourceType, namespace: string | undefined, opts: ListOptions = {}): ListResult {
    let at = this.rv;
    let after: string | undefined;
    if (opts.continueToken) {
      let token: { rv: number; start: string };
      try {
        token = JSON.parse(Buffer.from(opts.continueToken, 'base64url').toString('utf8'));
        if (typeof token.rv !== 'number' || typeof token.start !== 'string') throw new Error();
      } catch {
        throw errors.badRequest('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
      }
      if (token.rv < this.compactRev)
        throw errors.expired('The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.');
      at = token.rv;
      after = token.start;
    } else if (opts.resourceVersion !== undefined && opts.resourceVersion !== '') {
      const requested = Number(opts.resourceVersion);
      if (!/^\d+$/.test(opts.resourceVersion)) throw errors.badRequest(`resourceVersion: Invalid value: ${JSON.stringify(opts.resourceVersion)}: must be a non-negative integer`);
      const match = opts.resourceVersionMatch ?? '';
      if (match === 'Exact') {
        if (requested === 0) throw errors.badRequest('resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"');
        if (requested > this.rv) throw new ApiError(504, 'Timeout', `Too large resource version: ${requested}, current: ${this.rv}`, { causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }], retryAfterSeconds: 1 });
        at = requested;
      } else if (match === 'NotOlderThan' || match === '') {
        if (requested > this.rv) throw new ApiError(504, 'Timeout', `Too large resource version: ${requested}, current: ${this.rv}`, { causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }], retryAfterSeconds: 1 });
      } else throw errors.badRequest(`resourceVersionMatch: Unsupported value: ${JSON.stringify(match)}: supported values: "Exact", "NotOlderThan"`);
    } else if (opts.resourceVersionMatch) {
      throw errors.badRequest('resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided');
    }
    const snap = this.snapshot(t, at);
    const keys = [...snap.keys()].sort();
    const items: Obj[] = [];
    let continueToken: string | undefined;
    let remaining = 0;
    const limit = opts.limit && opts.limit > 0 ? opts.limit : Infinity;
    for (const key of keys) {
      if (after !== undefined && key <= after) continue;
      const o = snap.get(key)!;
      if (t.namespaced && namespace && o.metadata.namespace !== namespace) continue;
      if (opts.labelSelector && !matchesLabels(opts.labelSelector, o.metadata.labels)) continue;
      if (opts.fieldSelector && !matchesFields(opts.fieldSelector, t, o)) continue;
      if (items.length >= limit) {
        if (continueToken === undefined) continueToken = Buffer.from(JSON.stringify({ rv: at, start: nsKey(items[items.length - 1]!.metadata.namespace ?? '', items[items.length - 1]!.metadata.name) })).toString('base64url');
        remaining++;
        continue;
      }
      items.push(this.present(t, o));
    }
    return { items, resourceVersion: String(at), ...(continueToken ? { continueToken, remainingItemCount: remaining } : {}) };
  }

  // ------------------------------------------------------------ writes

  create(t: ResourceType, namespace: string, body: unknown, opts: WriteOptions = {}, applied?: ManagedFieldsEntry[]): WriteResult {
    const warnings: string[] = [];
    const obj = this.checkBody(t, namespace, body, 'create');
    if (t.namespaced) this.requireNamespace(namespace, true);
    const meta = obj.metadata;
    if (!meta.name && meta.generateName) {
      for (let i = 0; i < 8 && !meta.name; i++) {
        let s = '';
        for (let j = 0; j < 5; j++) s += GENERATE_ALPHABET[randomInt(GENERATE_ALPHABET.length)];
        const candidate = `${String(meta.generateName).slice(0, 58)}${s}`;
        if (!this.find(t, namespace, candidate)) meta.name = candidate;
      }
    }
    if (!meta.name) throw errors.invalid(t.group, t.kind, '', [{ reason: 'FieldValueRequired', field: 'metadata.name', message: 'Required value: name or generateName is required' }]);
    if (this.find(t, namespace, meta.name)) throw errors.alreadyExists(t.group, t.resource, meta.name);
    // Status is reset on create for types with a status subresource, except Nodes (kubelet registers its Node with status).
    if (t.status && t.storageKey !== '/nodes') delete obj.status;
    for (const k of ['uid', 'resourceVersion', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation', 'selfLink']) delete meta[k];
    delete meta.managedFields;
    meta.uid = randomUUID();
    meta.creationTimestamp = nowRfc3339();
    meta.generation = 1;
    this.prepare(t, undefined, obj, opts, warnings);
    const managedFields = applied ?? recordUpdate([], undefined, obj, managerOf(opts), apiVersionOf(t.group, t.version), nowRfc3339());
    if (managedFields.length) meta.managedFields = managedFields;
    if (opts.dryRun) return { object: this.present(t, obj), warnings, created: true };
    this.rv++;
    meta.resourceVersion = String(this.rv);
    this.bucket(t).set(nsKey(meta.namespace ?? '', meta.name), obj);
    this.emit('ADDED', t, obj);
    this.afterCommit(t, undefined, obj);
    return { object: this.present(t, obj), warnings, created: true };
  }

  /** PUT: full replacement, optimistic concurrency on metadata.resourceVersion. */
  update(t: ResourceType, namespace: string, name: string, body: unknown, subresource: string | undefined, opts: WriteOptions = {}): WriteResult {
    const old = this.find(t, namespace, name);
    if (!old) throw errors.notFound(t.group, t.resource, name);
    const obj = this.checkBody(t, namespace, body, 'update', name);
    const rv = obj.metadata.resourceVersion;
    if (rv === undefined || rv === '') {
      if (t.crd) throw errors.invalid(t.group, t.kind, name, [{ reason: 'FieldValueInvalid', field: 'metadata.resourceVersion', message: 'Invalid value: 0x0: must be specified for an update' }]);
    } else if (rv !== old.metadata.resourceVersion) {
      throw errors.conflict(t.group, t.resource, name, 'the object has been modified; please apply your changes to the latest version and try again');
    }
    return this.replace(t, old, obj, subresource, opts);
  }

  patch(t: ResourceType, namespace: string, name: string, type: PatchType, patch: unknown, subresource: string | undefined, opts: WriteOptions & { force?: boolean } = {}): WriteResult {
    const old = this.find(t, namespace, name);
    if (type === 'apply') return this.apply(t, namespace, name, old, patch, subresource, opts);
    if (!old) throw errors.notFound(t.group, t.resource, name);
    const current = this.present(t, old);
    let patched: unknown;
    switch (type) {
      case 'merge':
        if (!isObject(patch)) throw errors.badRequest('json: cannot unmarshal merge patch: not a JSON object');
        patched = mergePatch(current, patch);
        break;
      case 'json':
        patched = jsonPatch(current, patch);
        break;
      case 'strategic':
        if (t.crd) throw errors.unsupportedMediaType('application/strategic-merge-patch+json', ['application/json-patch+json', 'application/merge-patch+json', 'application/apply-patch+yaml']);
        if (!isObject(patch)) throw errors.badRequest('json: cannot unmarshal strategic merge patch: not a JSON object');
        patched = strategicMergePatch(current, patch);
        break;
    }
    if (!isObject(patched)) throw errors.badRequest('the patched document is not a JSON object');
    const obj = patched as Obj;
    if (!isObject(obj.metadata)) obj.metadata = {};
    // A resourceVersion in the patch is a precondition, as with PUT.
    if (obj.metadata.resourceVersion !== undefined && obj.metadata.resourceVersion !== old.metadata.resourceVersion)
      throw errors.conflict(t.group, t.resource, name, 'the object has been modified; please apply your changes to the latest version and try again');
    if (obj.metadata.name !== name) throw errors.badRequest(`the name of the object (${obj.metadata.name}) does not match the name on the URL (${name})`);
    return this.replace(t, old, this.checkBody(t, namespace, obj, 'update', name), subresource, opts);
  }

  private apply(t: ResourceType, namespace: string, name: string, old: Obj | undefined, patch: unknown, subresource: string | undefined, opts: WriteOptions & { force?: boolean }): WriteResult {
    if (!opts.fieldManager) throw errors.invalid('meta.k8s.io', 'PatchOptions', '', [{ reason: 'FieldValueRequired', field: 'fieldManager', message: 'Required value: is required for apply patch' }]);
    if (!isObject(patch)) throw errors.badRequest('error decoding YAML: apply patch must be an object');
    const applied = this.checkBody(t, namespace, patch, 'apply', name);
    const apiVersion = apiVersionOf(t.group, t.version);
    if (applied.metadata.resourceVersion !== undefined && old && applied.metadata.resourceVersion !== old.metadata.resourceVersion)
      throw errors.conflict(t.group, t.resource, name, 'the object has been modified; please apply your changes to the latest version and try again');
    if (applied.metadata.resourceVersion !== undefined && !old) throw errors.notFound(t.group, t.resource, name);
    delete applied.metadata.resourceVersion;
    if (Array.isArray(applied.metadata.managedFields)) throw errors.badRequest('metadata.managedFields must be nil');
    const sub = subresource === 'status' ? 'status' : undefined;
    // Fields the endpoint resets are not applied (nor owned): status on the main resource, everything but status on /status.
    let configured: Obj = applied;
    if (sub) configured = { apiVersion: applied.apiVersion, kind: applied.kind, metadata: { name, ...(t.namespaced ? { namespace } : {}) }, ...(applied.status !== undefined ? { status: applied.status } : {}) };
    else if (t.status) {
      const { status: _s, ...rest } = applied;
      configured = rest;
    }
    if (!old) {
      if (sub) throw errors.notFound(t.group, t.resource, name);
      const { object, managedFields } = serverSideApply(undefined, configured, opts.fieldManager, opts.force ?? false, apiVersion, nowRfc3339());
      object.apiVersion = apiVersion;
      object.kind = t.kind;
      return this.create(t, namespace, object, opts, managedFields);
    }
    const current = this.present(t, old);
    const { object, managedFields } = serverSideApply(current, configured, opts.fieldManager, opts.force ?? false, apiVersion, nowRfc3339(), sub);
    object.metadata = { ...object.metadata, managedFields };
    return this.replace(t, old, object, subresource, opts, managedFields);
  }

  /** The common update path: status subresource rules, server-owned metadata, validation, generation, no-op detection. */
  private replace(t: ResourceType, old: Obj, obj: Obj, subresource: string | undefined, opts: WriteOptions, applied?: ManagedFieldsEntry[]): WriteResult {
    const warnings: string[] = [];
    const name = old.metadata.name;
    let next: Obj;
    if (subresource === 'status') {
      next = structuredClone(old);
      next.apiVersion = obj.apiVersion;
      if (obj.status === undefined) delete next.status;
      else next.status = obj.status;
    } else {
      next = obj;
      if (t.status) {
        if (old.status === undefined) delete next.status;
        else next.status = structuredClone(old.status);
      }
      const meta = next.metadata;
      for (const k of ['uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation', 'namespace']) {
        if (old.metadata[k] === undefined) delete meta[k];
        else meta[k] = old.metadata[k];
      }
      if (old.metadata.deletionTimestamp) {
        const had = new Set<string>(old.metadata.finalizers ?? []);
        const added = (meta.finalizers ?? []).filter((f: string) => !had.has(f));
        if (added.length)
          throw errors.invalid(t.group, t.kind, name, [{ reason: 'FieldValueForbidden', field: 'metadata.finalizers', message: `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}` }]);
      }
    }
    if (t.namespaced) next.metadata.namespace = old.metadata.namespace;
    next.metadata.resourceVersion = old.metadata.resourceVersion;
    this.prepare(t, old, next, opts, warnings);
    if (applied) next.metadata.managedFields = applied;
    else {
      // Managed fields a client sends replace the server's (that is how kubectl migrates client-side apply ownership); [{}] clears them.
      const sent = obj.metadata.managedFields;
      let base: ManagedFieldsEntry[] = old.metadata.managedFields ?? [];
      if (Array.isArray(sent) && sent.length === 1 && deepEqual(sent[0], {})) base = [];
      else if (Array.isArray(sent) && subresource !== 'status' && !deepEqual(sent, old.metadata.managedFields)) base = sent;
      next.metadata.managedFields = recordUpdate(base, { ...old, apiVersion: next.apiVersion }, next, managerOf(opts), apiVersionOf(t.group, t.version), nowRfc3339(), subresource === 'status' ? 'status' : undefined);
    }
    if (next.metadata.managedFields.length === 0) delete next.metadata.managedFields;
    next.metadata.generation = deepEqual(specOf(next), specOf(old)) ? old.metadata.generation : (old.metadata.generation ?? 0) + 1;
    if (next.metadata.generation === undefined) delete next.metadata.generation;
    if (deepEqual(comparable(next), comparable({ ...old, apiVersion: next.apiVersion, kind: next.kind }))) return { object: this.present(t, old), warnings };
    if (opts.dryRun) return { object: this.present(t, next), warnings };
    // Finalizers all gone from an object being deleted: it goes now.
    if (next.metadata.deletionTimestamp && (next.metadata.finalizers ?? []).length === 0) {
      this.rv++;
      next.metadata.resourceVersion = String(this.rv);
      this.bucket(t).delete(nsKey(next.metadata.namespace ?? '', name));
      this.emit('DELETED', t, next, old);
      this.afterDelete(t, next);
      return { object: this.present(t, next), warnings };
    }
    this.rv++;
    next.metadata.resourceVersion = String(this.rv);
    this.bucket(t).set(nsKey(next.metadata.namespace ?? '', name), next);
    this.emit('MODIFIED', t, next, old);
    this.afterCommit(t, old, next);
    return { object: this.present(t, next), warnings };
  }

  /** Deletes one object; with finalizers it is only marked (deletionTimestamp) and returned. */
  delete(t: ResourceType, namespace: string, name: string, options: Obj = {}, dryRun = false): { object: Obj; pending: boolean } {
    const old = this.find(t, namespace, name);
    if (!old) throw errors.notFound(t.group, t.resource, name);
    const pre = options.preconditions ?? {};
    if (pre.uid && pre.uid !== old.metadata.uid)
      throw errors.conflict(t.group, t.resource, name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`);
    if (pre.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion)
      throw errors.conflict(t.group, t.resource, name, `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${old.metadata.resourceVersion}`);
    if (dryRun) return { object: this.present(t, old), pending: (old.metadata.finalizers ?? []).length > 0 };
    if (t.storageKey === '/namespaces') return this.deleteNamespace(t, old);
    if ((old.metadata.finalizers ?? []).length > 0) {
      if (old.metadata.deletionTimestamp) return { object: this.present(t, old), pending: true };
      const next = structuredClone(old);
      next.metadata.deletionTimestamp = nowRfc3339();
      next.metadata.deletionGracePeriodSeconds = 0;
      this.rv++;
      next.metadata.resourceVersion = String(this.rv);
      this.bucket(t).set(nsKey(next.metadata.namespace ?? '', name), next);
      this.emit('MODIFIED', t, next, old);
      return { object: this.present(t, next), pending: true };
    }
    return { object: this.present(t, this.remove(t, old)), pending: false };
  }

  private remove(t: ResourceType, old: Obj): Obj {
    const gone = { ...old, metadata: { ...old.metadata } };
    this.rv++;
    gone.metadata.resourceVersion = String(this.rv);
    this.bucket(t).delete(nsKey(old.metadata.namespace ?? '', old.metadata.name));
    this.emit('DELETED', t, gone, old);
    this.afterDelete(t, gone);
    return gone;
  }

  deleteCollection(t: ResourceType, namespace: string | undefined, opts: ListOptions, dryRun = false): Obj[] {
    const { items } = this.list(t, namespace, { ...(opts.labelSelector ? { labelSelector: opts.labelSelector } : {}), ...(opts.fieldSelector ? { fieldSelector: opts.fieldSelector } : {}) });
    return items.map((o) => this.delete(t, o.metadata.namespace ?? '', o.metadata.name, {}, dryRun).object);
  }

  /** Namespace deletion: Terminating, contents deleted (finalizer holders marked), namespace gone once empty. */
  private deleteNamespace(t: ResourceType, ns: Obj): { object: Obj; pending: boolean } {
    const name = ns.metadata.name;
    let current = ns;
    if (!ns.metadata.deletionTimestamp) {
      const next = structuredClone(ns);
      next.metadata.deletionTimestamp = nowRfc3339();
      next.metadata.deletionGracePeriodSeconds = 0;
      next.status = { ...(next.status ?? {}), phase: 'Terminating' };
      this.rv++;
      next.metadata.resourceVersion = String(this.rv);
      this.bucket(t).set(nsKey('', name), next);
      this.emit('MODIFIED', t, next, ns);
      current = next;
    }
    for (const [, types] of this.storedTypes()) {
      if (!types.namespaced) continue;
      for (const o of [...this.bucket(types).values()]) if (o.metadata.namespace === name) this.delete(types, name, o.metadata.name);
    }
    const after = this.find(t, '', name);
    if (!after) return { object: this.present(t, current), pending: false }; // removed when its last object went
    if (this.namespaceEmpty(name)) return { object: this.present(t, this.remove(t, after)), pending: false };
    return { object: this.present(t, after), pending: true };
  }

  private namespaceEmpty(name: string): boolean {
    for (const [, t] of this.storedTypes()) if (t.namespaced) for (const o of this.bucket(t).values()) if (o.metadata.namespace === name) return false;
    return true;
  }

  /** One registered type per stored group/resource. */
  private storedTypes(): Map<string, ResourceType> {
    const out = new Map<string, ResourceType>();
    for (const g of this.registry.groups()) for (const v of g.versions) for (const t of this.registry.resources(g.name, v)) if (!out.has(t.storageKey)) out.set(t.storageKey, t);
    return out;
  }

  private afterDelete(t: ResourceType, gone: Obj): void {
    if (t.storageKey === 'apiextensions.k8s.io/customresourcedefinitions') this.dropCrd(gone);
    const ns = gone.metadata.namespace;
    if (t.namespaced && ns) {
      const nsType = this.type('', 'v1', 'namespaces');
      const nsObj = this.find(nsType, '', ns);
      if (nsObj?.metadata.deletionTimestamp && this.namespaceEmpty(ns)) this.remove(nsType, nsObj);
    }
  }

  private afterCommit(t: ResourceType, _old: Obj | undefined, obj: Obj): void {
    if (t.storageKey === 'apiextensions.k8s.io/customresourcedefinitions') {
      const before = this.registry.versionsOf(`${obj.spec.group}/${obj.spec.names.plural}`);
      this.registry.registerCrd(obj);
      const after = new Set(this.registry.versionsOf(`${obj.spec.group}/${obj.spec.names.plural}`).map((x) => x.version));
      const removed = before.filter((x) => !after.has(x.version));
      if (removed.length) for (const l of this.unregisterListeners) l(removed);
    }
  }

  private dropCrd(crd: Obj): void {
    const types = this.registry.versionsOf(`${crd.spec.group}/${crd.spec.names.plural}`);
    const t = types[0];
    if (t) for (const o of [...this.bucket(t).values()]) this.remove(t, o);
    this.data.delete(`${crd.spec.group}/${crd.spec.names.plural}`);
    const removed = this.registry.unregisterCrd(crd.metadata.name);
    for (const l of this.unregisterListeners) l(removed);
  }

  // ------------------------------------------------------------ validation and defaulting

  private requireNamespace(namespace: string, forCreate: boolean): void {
    const ns = this.find(this.type('', 'v1', 'namespaces'), '', namespace);
    if (!ns) throw errors.notFound('', 'namespaces', namespace);
    if (forCreate && ns.metadata.deletionTimestamp)
      throw new ApiError(403, 'Forbidden', `unable to create new content in namespace ${namespace} because it is being terminated`, { name: namespace, kind: 'namespaces', causes: [{ reason: 'NamespaceTerminating', message: `namespace ${namespace} is being terminated`, field: 'metadata.namespace' }] });
  }

  /** Decoded-body checks: object, apiVersion/kind, namespace and name agreement. Returns a private copy. */
  private checkBody(t: ResourceType, namespace: string, body: unknown, verb: 'create' | 'update' | 'apply', urlName?: string): Obj {
    if (!isObject(body)) throw errors.badRequest(`the body of the request must be a JSON object`);
    const obj = structuredClone(body) as Obj;
    const expected = apiVersionOf(t.group, t.version);
    if (obj.kind === undefined || obj.kind === '') {
      if (t.crd || verb === 'apply') throw errors.badRequest(`Object 'Kind' is missing in '${JSON.stringify(body).slice(0, 200)}'`);
      obj.kind = t.kind;
    } else if (obj.kind !== t.kind) throw errors.badRequest(`the kind in the data (${obj.kind}) does not match the expected kind (${t.kind})`);
    if (obj.apiVersion === undefined || obj.apiVersion === '') {
      if (t.crd || verb === 'apply') throw errors.badRequest(`Object 'apiVersion' is missing in '${JSON.stringify(body).slice(0, 200)}'`);
      obj.apiVersion = expected;
    } else if (obj.apiVersion !== expected) {
      // Another served version of the same resource is fine (conversion strategy None); anything else is not.
      const [g, v] = String(obj.apiVersion).includes('/') ? String(obj.apiVersion).split('/') : ['', String(obj.apiVersion)];
      if (g !== t.group || !this.registry.versionsOf(t.storageKey).some((x) => x.version === v))
        throw errors.badRequest(`the API version in the data (${obj.apiVersion}) does not match the expected API version (${expected})`);
      obj.apiVersion = expected;
    }
    if (!isObject(obj.metadata)) obj.metadata = {};
    const meta = obj.metadata;
    if (t.namespaced) {
      if (meta.namespace !== undefined && meta.namespace !== '' && meta.namespace !== namespace)
        throw errors.badRequest('the namespace of the provided object does not match the namespace sent on the request');
      meta.namespace = namespace;
    } else delete meta.namespace;
    if (urlName !== undefined) {
      if (verb === 'apply' && (meta.name === undefined || meta.name === '')) meta.name = urlName;
      if (meta.name !== urlName) throw errors.badRequest(`the name of the object (${meta.name}) does not match the name on the URL (${urlName})`);
    }
    return obj;
  }

  /** Type-specific normalization, metadata validation, CRD schema (prune, default, validate). */
  private prepare(t: ResourceType, old: Obj | undefined, obj: Obj, opts: WriteOptions, warnings: string[]): void {
    const causes: StatusCause[] = [];
    const meta = obj.metadata;
    const nameRe = t.storageKey === '/namespaces' ? LABEL_1123 : t.storageKey === '/services' ? LABEL_1035 : SUBDOMAIN;
    if (typeof meta.name !== 'string' || meta.name.length > (nameRe === SUBDOMAIN ? 253 : 63) || !nameRe.test(meta.name))
      causes.push({
        reason: 'FieldValueInvalid',
        field: 'metadata.name',
        message: `Invalid value: ${JSON.stringify(meta.name)}: ${nameRe === SUBDOMAIN ? "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character" : nameRe === LABEL_1035 ? "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character" : "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"}`,
      });
    for (const [field, map, values] of [['metadata.labels', meta.labels, true], ['metadata.annotations', meta.annotations, false]] as const) {
      if (map === undefined || map === null) continue;
      if (!isObject(map)) {
        causes.push({ reason: 'FieldValueInvalid', field, message: 'Invalid value: must be a map of strings' });
        continue;
      }
      for (const [k, v] of Object.entries(map)) {
        const kp = labelKeyProblem(k);
        if (kp) causes.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${JSON.stringify(k)}: ${kp}` });
        if (typeof v !== 'string') causes.push({ reason: 'FieldValueInvalid', field: `${field}.${k}`, message: `Invalid value: must be a string` });
        else if (values) {
          const vp = labelValueProblem(v);
          if (vp) causes.push({ reason: 'FieldValueInvalid', field: `${field}`, message: `Invalid value: ${JSON.stringify(v)}: ${vp}` });
        }
      }
    }
    if (meta.finalizers !== undefined && (!Array.isArray(meta.finalizers) || meta.finalizers.some((f: unknown) => typeof f !== 'string')))
      causes.push({ reason: 'FieldValueInvalid', field: 'metadata.finalizers', message: 'Invalid value: must be a list of strings' });
    switch (t.storageKey) {
      case '/namespaces':
        meta.labels = { ...(meta.labels ?? {}), 'kubernetes.io/metadata.name': meta.name };
        obj.spec = { finalizers: ['kubernetes'], ...(obj.spec ?? {}) };
        if (!old) obj.status = { phase: 'Active' };
        break;
      case '/secrets':
        if (isObject(obj.stringData)) {
          obj.data = { ...(obj.data ?? {}) };
          for (const [k, v] of Object.entries(obj.stringData)) obj.data[k] = Buffer.from(String(v), 'utf8').toString('base64');
          delete obj.stringData;
        }
        for (const [k, v] of Object.entries(obj.data ?? {}))
          if (typeof v !== 'string' || v.length % 4 !== 0 || !BASE64.test(v)) causes.push({ reason: 'FieldValueInvalid', field: `data[${k}]`, message: 'Invalid value: illegal base64 data' });
        obj.type ??= 'Opaque';
        if (old && old.type !== obj.type) causes.push({ reason: 'FieldValueInvalid', field: 'type', message: 'Invalid value: field is immutable' });
        break;
      case '/configmaps':
        for (const [k, v] of Object.entries(obj.data ?? {})) if (typeof v !== 'string') causes.push({ reason: 'FieldValueTypeInvalid', field: `data.${k}`, message: 'Invalid value: must be a string' });
        break;
      case '/services': {
        const spec = (obj.spec = isObject(obj.spec) ? obj.spec : {});
        spec.type ??= 'ClusterIP';
        if (old?.spec?.clusterIP && (spec.clusterIP === undefined || spec.clusterIP === '')) spec.clusterIP = old.spec.clusterIP;
        if (old?.spec?.clusterIP && spec.clusterIP !== old.spec.clusterIP && spec.type !== 'ExternalName' && old.spec.type !== 'ExternalName')
          causes.push({ reason: 'FieldValueInvalid', field: 'spec.clusterIPs[0]', message: `Invalid value: ${JSON.stringify(spec.clusterIP)}: may not change once set` });
        if (spec.type !== 'ExternalName' && (spec.clusterIP === undefined || spec.clusterIP === '')) {
          const n = this.nextServiceIP++;
          spec.clusterIP = `10.96.${Math.floor(n / 256) % 256}.${n % 256}`;
        }
        if (spec.type !== 'ExternalName') spec.clusterIPs = [spec.clusterIP];
        if (Array.isArray(spec.ports)) for (const p of spec.ports) if (isObject(p)) {
          p.protocol ??= 'TCP';
          p.targetPort ??= p.port;
        }
        if (!old) obj.status = { loadBalancer: {} };
        break;
      }
      case 'apiextensions.k8s.io/customresourcedefinitions': {
        const crdCauses = validateCrd(obj);
        if (old && crdCauses.length === 0 && old.spec.scope !== obj.spec.scope)
          crdCauses.push({ reason: 'FieldValueInvalid', field: 'spec.scope', message: 'Invalid value: field is immutable' });
        causes.push(...crdCauses);
        if (crdCauses.length === 0 && !old) {
          const storage = obj.spec.versions.find((v: Obj) => v.storage)?.name;
          const now = nowRfc3339();
          const names = { ...obj.spec.names, singular: obj.spec.names.singular ?? obj.spec.names.kind.toLowerCase(), listKind: obj.spec.names.listKind ?? `${obj.spec.names.kind}List` };
          obj.status = {
            acceptedNames: names,
            conditions: [
              { type: 'NamesAccepted', status: 'True', reason: 'NoConflicts', message: 'no conflicts found', lastTransitionTime: now },
              { type: 'Established', status: 'True', reason: 'InitialNamesAccepted', message: 'the initial names have been accepted', lastTransitionTime: now },
            ],
            storedVersions: [storage],
          };
        } else if (crdCauses.length === 0 && old) {
          const storage = obj.spec.versions.find((v: Obj) => v.storage)?.name;
          if (obj.status && !obj.status.storedVersions?.includes(storage)) obj.status = { ...obj.status, storedVersions: [...(obj.status.storedVersions ?? []), storage] };
        }
        break;
      }
    }
    if (causes.length) throw errors.invalid(t.group, t.kind, meta.name ?? '', causes);
    if (t.schema) {
      const unknown = t.schema.prune(obj);
      if (unknown.length) {
        const mode = opts.fieldValidation ?? 'Warn';
        if (mode === 'Strict') throw errors.badRequest(`${t.kind} in version "${t.version}" cannot be handled as a ${t.kind}: strict decoding error: ${unknown.map((u) => `unknown field "${u}"`).join(', ')}`);
        if (mode === 'Warn') for (const u of unknown) warnings.push(`unknown field "${u}"`);
      }
      const invalid = t.schema.defaultAndValidate(obj);
      if (invalid.length) throw errors.invalid(t.group, t.kind, meta.name ?? '', invalid);
    }
  }
}
