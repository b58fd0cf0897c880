/**
 * HTTP layer: routing of discovery and resource paths, body decoding, query options, content
 * negotiation (JSON, Table), Status errors, fault injection and the request log.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parse as parseYaml } from 'yaml';
import { ApiError, errors, reasonForCode } from './errors.js';
import type { FaultInjector, RequestInfo } from './faults.js';
import { OPENAPI_V2_JSON, openApiV2Protobuf, openApiV3Document, openApiV3Index } from './openapi.js';
import { apiVersionOf, type ResourceType } from './registry.js';
import { nameFromFieldSelector, parseFieldSelector, parseLabelSelector } from './selectors.js';
import type { FieldValidation, Obj, PatchType, Store, WriteOptions } from './store.js';
import { toTable, wantsTable, type IncludeObject } from './table.js';
import type { WatchHub } from './watch.js';

export const KUBE_VERSION = { major: '1', minor: '32', gitVersion: 'v1.32.0+raven-lab' };
const MAX_BODY = 3 * 1024 * 1024;

const PATCH_TYPES: Record<string, PatchType> = {
  'application/merge-patch+json': 'merge',
  'application/json-patch+json': 'json',
  'application/strategic-merge-patch+json': 'strategic',
  'application/apply-patch+yaml': 'apply',
};

export interface RequestRecord extends RequestInfo {
  status: number;
}

interface Route {
  type: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: string;
  legacyWatch: boolean;
}

class Query {
  constructor(private readonly p: URLSearchParams) {}
  str(k: string): string | undefined {
    const v = this.p.get(k);
    return v === null ? undefined : v;
  }
  bool(k: string): boolean {
    const v = this.p.get(k);
    if (v === null) return false;
    if (v === '' || v === '1' || v === 'true' || v === 'True') return true;
    if (v === '0' || v === 'false' || v === 'False') return false;
    throw errors.badRequest(`${k}: Invalid value: ${JSON.stringify(v)}: must be a boolean`);
  }
  int(k: string): number | undefined {
    const v = this.p.get(k);
    if (v === null || v === '') return undefined;
    if (!/^-?\d+$/.test(v)) throw errors.badRequest(`${k}: Invalid value: ${JSON.stringify(v)}: must be an integer`);
    return Number(v);
  }
}

export class Handlers {
  private readonly log: RequestRecord[] = [];

  constructor(
    private readonly store: Store,
    private readonly hub: WatchHub,
    private readonly faults: FaultInjector,
    private readonly serverAddress: () => string,
  ) {}

  requests(): RequestRecord[] {
    return [...this.log];
  }

  clearRequests(): void {
    this.log.length = 0;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://apiserver');
    const method = (req.method ?? 'GET').toUpperCase();
    const isWatch = method === 'GET' && (['1', 'true', 'True'].includes(url.searchParams.get('watch') ?? '') || /^\/apis?\/(?:[^/]+\/)?v[^/]*\/watch\//.test(url.pathname));
    const info: RequestInfo = { method, path: url.pathname, query: url.search.slice(1), watch: isWatch };
    const record: RequestRecord = { ...info, status: 0 };
    this.log.push(record);
    if (this.log.length > 2000) this.log.splice(0, this.log.length - 2000);
    res.on('finish', () => (record.status = res.statusCode));
    res.on('close', () => (record.status ||= res.statusCode));
    try {
      const delay = this.faults.delayFor(info);
      if (delay > 0) {
        // A client that gives up (a request deadline) ends the wait: no timer outlives its request.
        await new Promise<void>((r) => {
          const timer = setTimeout(r, delay);
          res.once('close', () => (clearTimeout(timer), r()));
        });
        if (res.closed || req.socket.destroyed) return;
      }
      const fault = this.faults.take(info);
      if (fault) {
        const code = fault.status ?? 500;
        const err = new ApiError(code, reasonForCode(code), fault.message ?? `injected fault: ${code} for ${method} ${url.pathname}`, fault.retryAfterSeconds ? { retryAfterSeconds: fault.retryAfterSeconds } : undefined);
        if (fault.retryAfterSeconds) res.setHeader('Retry-After', String(fault.retryAfterSeconds));
        await drain(req);
        return this.send(res, code, err.toStatus());
      }
      await this.route(req, res, url, method, isWatch);
    } catch (e) {
      const err = e instanceof ApiError ? e : errors.internal((e as Error)?.message ?? String(e));
      if (!(e instanceof ApiError)) console.error('apiserver: internal error', e);
      if (res.headersSent) {
        res.end();
        return;
      }
      if (err.reason === 'Timeout' || err.code === 429) res.setHeader('Retry-After', String(err.details?.retryAfterSeconds ?? 1));
      this.send(res, err.code, err.toStatus());
    }
  }

  private send(res: ServerResponse, code: number, body: unknown, contentType = 'application/json', warnings: string[] = []): void {
    const text = JSON.stringify(body);
    if (warnings.length) res.setHeader('Warning', warnings.map((w) => `299 - ${JSON.stringify(w)}`));
    res.writeHead(code, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache, private' });
    res.end(text);
  }

  private async route(req: IncomingMessage, res: ServerResponse, url: URL, method: string, isWatch: boolean): Promise<void> {
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const segs = path.split('/').filter(Boolean);
    const registry = this.store.registry;
    const discovery = (doc: object | undefined): void => {
      if (method !== 'GET') throw errors.methodNotAllowed();
      if (!doc) throw errors.pathNotFound(path);
      this.send(res, 200, doc);
    };

    if (path === '/version') return discovery({ ...KUBE_VERSION, gitCommit: '0000000000000000000000000000000000000000', gitTreeState: 'clean', buildDate: '2025-01-01T00:00:00Z', goVersion: `node ${process.version}`, compiler: 'node', platform: `${process.platform}/${process.arch}` });
    if (path === '/healthz' || path === '/livez' || path === '/readyz') {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('ok');
      return;
    }
    if (path === '/openapi/v3') return discovery(openApiV3Index(registry));
    if (segs[0] === 'openapi' && segs[1] === 'v3' && segs[2] === 'api' && segs.length === 4) return discovery(openApiV3Document(registry, '', segs[3]!));
    if (segs[0] === 'openapi' && segs[1] === 'v3' && segs[2] === 'apis' && segs.length === 5) return discovery(openApiV3Document(registry, segs[3]!, segs[4]!));
    if (path === '/openapi/v2') {
      if (method !== 'GET') throw errors.methodNotAllowed();
      if ((req.headers.accept ?? '').includes('protobuf')) {
        const pb = openApiV2Protobuf();
        res.writeHead(200, { 'Content-Type': 'application/com.github.proto-openapi.spec.v2.v1.0+protobuf', 'Content-Length': pb.length });
        res.end(pb);
        return;
      }
      return this.send(res, 200, OPENAPI_V2_JSON);
    }
    if (segs[0] === 'openapi') throw errors.pathNotFound(path);
    if (path === '/api') return discovery(registry.apiVersions(this.serverAddress()));
    if (path === '/apis') return discovery(registry.apiGroupList());
    if (segs[0] === 'apis' && segs.length === 2) return discovery(registry.apiGroup(segs[1]!));
    if (segs[0] === 'api' && segs.length === 2) return discovery(registry.apiResourceList('', segs[1]!));
    if (segs[0] === 'apis' && segs.length === 3) return discovery(registry.apiResourceList(segs[1]!, segs[2]!));

    let group: string;
    let version: string;
    let rest: string[];
    if (segs[0] === 'api' && segs.length > 2) [group, version, rest] = ['', segs[1]!, segs.slice(2)];
    else if (segs[0] === 'apis' && segs.length > 3) [group, version, rest] = [segs[1]!, segs[2]!, segs.slice(3)];
    else throw errors.pathNotFound(path);
    const route = this.resolve(group, version, rest.map(decodeURIComponent), path);
    const q = new Query(url.searchParams);
    const dryRun = parseDryRun(url.searchParams.getAll('dryRun'));

    switch (method) {
      case 'GET':
        if (isWatch || route.legacyWatch) return this.watch(req, res, route, q);
        return route.name === undefined ? this.list(req, res, route, q) : this.get(req, res, route, q);
      case 'POST': {
        if (route.name !== undefined || route.subresource) throw errors.methodNotAllowed();
        if (route.type.namespaced && route.namespace === undefined) throw errors.methodNotAllowed();
        const body = await readBody(req, 'create');
        const r = this.store.create(route.type, route.namespace ?? '', body, this.writeOptions(req, q, dryRun));
        return this.send(res, 201, r.object, 'application/json', r.warnings);
      }
      case 'PUT': {
        if (route.name === undefined) throw errors.methodNotAllowed();
        const body = await readBody(req, 'update');
        const r = this.store.update(route.type, route.namespace ?? '', route.name, body, route.subresource, this.writeOptions(req, q, dryRun));
        return this.send(res, 200, r.object, 'application/json', r.warnings);
      }
      case 'PATCH': {
        if (route.name === undefined) throw errors.methodNotAllowed();
        const ct = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
        const type = PATCH_TYPES[ct];
        if (!type) {
          await drain(req);
          throw errors.unsupportedMediaType(ct, Object.keys(PATCH_TYPES));
        }
        const raw = await readRaw(req);
        let patch: unknown;
        try {
          patch = type === 'apply' ? parseYaml(raw, { strict: true, uniqueKeys: true }) : JSON.parse(raw);
        } catch (e) {
          throw errors.badRequest(`error decoding patch: ${(e as Error).message}`);
        }
        const force = q.bool('force');
        if (force && type !== 'apply') throw errors.invalid('meta.k8s.io', 'PatchOptions', '', [{ reason: 'FieldValueForbidden', field: 'force', message: 'Forbidden: may not be specified for non-apply patch' }]);
        const r = this.store.patch(route.type, route.namespace ?? '', route.name, type, patch, route.subresource, { ...this.writeOptions(req, q, dryRun), force });
        return this.send(res, r.created ? 201 : 200, r.object, 'application/json', r.warnings);
      }
      case 'DELETE': {
        if (route.subresource) throw errors.methodNotAllowed();
        const raw = await readRaw(req);
        let options: Obj = {};
        if (raw.trim()) {
          try {
            options = JSON.parse(raw);
          } catch (e) {
            throw errors.badRequest(`error decoding DeleteOptions: ${(e as Error).message}`);
          }
        }
        const deleteDryRun = dryRun || (Array.isArray(options.dryRun) && options.dryRun.includes('All'));
        if (route.name === undefined) {
          const items = this.store.deleteCollection(route.type, route.namespace, {
            labelSelector: parseLabelSelector(q.str('labelSelector')),
            fieldSelector: parseFieldSelector(q.str('fieldSelector'), route.type),
          }, deleteDryRun);
          return this.send(res, 200, { kind: route.type.listKind, apiVersion: apiVersionOf(route.type.group, route.type.version), metadata: { resourceVersion: this.store.resourceVersion }, items: items.map((o) => this.listItem(route.type, o)) });
        }
        const { object, pending } = this.store.delete(route.type, route.namespace ?? '', route.name, options, deleteDryRun);
        // kube-apiserver returns the object for custom resources, namespaces and pending deletions, a Status otherwise.
        if (pending || route.type.crd || route.type.storageKey === '/namespaces') return this.send(res, pending ? 202 : 200, object);
        return this.send(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name: route.name, ...(route.type.group ? { group: route.type.group } : {}), kind: route.type.resource, uid: object.metadata.uid } });
      }
      default:
        throw errors.methodNotAllowed();
    }
  }

  private resolve(group: string, version: string, rest: string[], path: string): Route {
    let legacyWatch = false;
    if (rest[0] === 'watch') {
      legacyWatch = true;
      rest = rest.slice(1);
    }
    const registry = this.store.registry;
    let namespace: string | undefined;
    let resource: string;
    let name: string | undefined;
    let subresource: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3 && !(rest.length === 3 && (rest[2] === 'status' || rest[2] === 'finalize'))) {
      [namespace, resource, name, subresource] = [rest[1], rest[2]!, rest[3], rest[4]];
      if (rest.length > 5) throw errors.pathNotFound(path);
    } else {
      [resource, name, subresource] = [rest[0]!, rest[1], rest[2]];
      if (rest.length > 3) throw errors.pathNotFound(path);
    }
    const type = registry.lookup(group, version, resource);
    if (!type) throw errors.pathNotFound(path);
    if (namespace !== undefined && !type.namespaced) throw errors.pathNotFound(path);
    if (type.namespaced && namespace === undefined && name !== undefined) throw errors.pathNotFound(path);
    if (subresource !== undefined && !(subresource === 'status' && type.status)) throw errors.pathNotFound(path);
    if (legacyWatch && name !== undefined) throw errors.pathNotFound(path);
    return { type, ...(namespace !== undefined ? { namespace } : {}), ...(name !== undefined ? { name } : {}), ...(subresource !== undefined ? { subresource } : {}), legacyWatch };
  }

  private writeOptions(req: IncomingMessage, q: Query, dryRun: boolean): WriteOptions {
    const fv = q.str('fieldValidation');
    if (fv !== undefined && fv !== 'Strict' && fv !== 'Warn' && fv !== 'Ignore')
      throw errors.badRequest(`fieldValidation: Unsupported value: ${JSON.stringify(fv)}: supported values: "Ignore", "Strict", "Warn"`);
    const fieldManager = q.str('fieldManager');
    if (fieldManager !== undefined && (fieldManager.length > 128 || /[^\x20-\x7e]/.test(fieldManager)))
      throw errors.invalid('meta.k8s.io', 'PatchOptions', '', [{ reason: 'FieldValueInvalid', field: 'fieldManager', message: `Invalid value: ${JSON.stringify(fieldManager)}: must be at most 128 printable characters` }]);
    const defaultManager = (req.headers['user-agent'] ?? '').split('/')[0]!.slice(0, 128) || 'unknown';
    return { dryRun, defaultManager, ...(fieldManager ? { fieldManager } : {}), ...(fv ? { fieldValidation: fv as FieldValidation } : {}) };
  }

  /** List items as kube-apiserver serializes them: built-ins without kind/apiVersion, custom resources with. */
  private listItem(t: ResourceType, o: Obj): Obj {
    if (t.crd) return o;
    const { kind: _k, apiVersion: _a, ...rest } = o;
    return rest;
  }

  private table(req: IncomingMessage, q: Query): IncludeObject | undefined {
    if (!wantsTable(req.headers.accept)) return undefined;
    const inc = q.str('includeObject') ?? 'Metadata';
    if (inc !== 'None' && inc !== 'Metadata' && inc !== 'Object') throw errors.badRequest(`includeObject: Unsupported value: ${JSON.stringify(inc)}`);
    return inc;
  }

  private get(req: IncomingMessage, res: ServerResponse, r: Route, q: Query): void {
    const obj = this.store.get(r.type, r.namespace ?? '', r.name!);
    const table = this.table(req, q);
    if (table) return this.send(res, 200, toTable(r.type, [obj], { resourceVersion: obj.metadata.resourceVersion }, table), 'application/json;as=Table;v=v1;g=meta.k8s.io');
    this.send(res, 200, obj);
  }

  private list(req: IncomingMessage, res: ServerResponse, r: Route, q: Query): void {
    const t = r.type;
    const result = this.store.list(t, r.namespace, {
      labelSelector: parseLabelSelector(q.str('labelSelector')),
      fieldSelector: parseFieldSelector(q.str('fieldSelector'), t),
      ...(q.str('resourceVersion') !== undefined ? { resourceVersion: q.str('resourceVersion')! } : {}),
      ...(q.str('resourceVersionMatch') ? { resourceVersionMatch: q.str('resourceVersionMatch')! } : {}),
      ...(q.int('limit') !== undefined ? { limit: q.int('limit')! } : {}),
      ...(q.str('continue') ? { continueToken: q.str('continue')! } : {}),
    });
    const metadata: Obj = { resourceVersion: result.resourceVersion };
    if (result.continueToken) {
      metadata.continue = result.continueToken;
      metadata.remainingItemCount = result.remainingItemCount;
    }
    const table = this.table(req, q);
    if (table) return this.send(res, 200, toTable(t, result.items, metadata, table), 'application/json;as=Table;v=v1;g=meta.k8s.io');
    this.send(res, 200, { kind: t.listKind, apiVersion: apiVersionOf(t.group, t.version), metadata, items: result.items.map((o) => this.listItem(t, o)) });
  }

  private watch(req: IncomingMessage, res: ServerResponse, r: Route, q: Query): void {
    const fieldSelector = parseFieldSelector(q.str('fieldSelector'), r.type);
    const labelSelector = parseLabelSelector(q.str('labelSelector'));
    const rv = q.str('resourceVersion');
    const timeoutSeconds = q.int('timeoutSeconds');
    const table = this.table(req, q);
    const name = r.name ?? nameFromFieldSelector(fieldSelector);
    if (r.name !== undefined && r.namespace === undefined && r.type.namespaced) throw errors.pathNotFound(req.url ?? '');
    this.hub.serve(req, res, {
      type: r.type,
      ...(r.namespace !== undefined ? { namespace: r.namespace } : {}),
      ...(name !== undefined ? { name } : {}),
      labelSelector,
      fieldSelector,
      ...(rv !== undefined ? { resourceVersion: rv } : {}),
      allowWatchBookmarks: q.bool('allowWatchBookmarks'),
      sendInitialEvents: q.bool('sendInitialEvents'),
      ...(timeoutSeconds !== undefined ? { timeoutSeconds } : {}),
      ...(table ? { table } : {}),
    });
  }
}

function parseDryRun(values: string[]): boolean {
  for (const v of values) if (v !== 'All') throw errors.badRequest(`dryRun: Unsupported value: ${JSON.stringify(v)}: supported values: "All"`);
  return values.length > 0;
}

async function readRaw(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new ApiError(413, 'RequestEntityTooLarge', 'Request entity too large: limit is 3145728');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function drain(req: IncomingMessage): Promise<void> {
  for await (const _ of req) void _;
}

async function readBody(req: IncomingMessage, verb: string): Promise<unknown> {
  const ct = (req.headers['content-type'] ?? 'application/json').split(';')[0]!.trim().toLowerCase();
  const raw = await readRaw(req);
  if (ct === 'application/vnd.kubernetes.protobuf' || ct === 'application/cbor') throw errors.unsupportedMediaType(ct, ['application/json', 'application/yaml']);
  if (!raw.trim()) throw errors.badRequest(`the body of the ${verb} request is empty`);
  try {
    if (ct === 'application/yaml' || ct === 'application/x-yaml' || ct === 'text/yaml') return parseYaml(raw, { strict: true, uniqueKeys: true });
    return JSON.parse(raw);
  } catch (e) {
    throw errors.badRequest(`error decoding request body: ${(e as Error).message}`);
  }
}
