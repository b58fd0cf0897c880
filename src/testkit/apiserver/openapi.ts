/**
 * The OpenAPI surface kubectl needs, without schemas (docs/0002-embedded-apiserver.md):
 * - `/openapi/v2`: an empty document. kubectl's client-side validation (default
 *   `--validate=strict`) downloads it, finds no schema for any kind and skips; with a 404 instead,
 *   `kubectl apply` fails with "failed to download openapi".
 * - `/openapi/v3`: an index and one document per group/version with paths, operations, query
 *   parameters, patch content types and `x-kubernetes-group-version-kind`. kubectl checks it for
 *   the `fieldValidation` parameter and, finding it, relies on the server's validation, as it does
 *   against kube-apiserver.
 *
 * Strategic merge patch is deliberately not advertised: kubectl would then look for a schema to
 * compute its client-side-apply patch, warn, and fall back to its compiled-in types anyway, which
 * it does silently when the content type is absent.
 */
import { createHash } from 'node:crypto';
import type { Registry, ResourceType } from './registry.js';

const query = (name: string, type: 'string' | 'boolean' | 'integer', description: string): object => ({ name, in: 'query', description, schema: { type, uniqueItems: true } });

const WRITE_PARAMS = [
  query('dryRun', 'string', 'When present, indicates that modifications should not be persisted. Valid value: All.'),
  query('fieldManager', 'string', 'A name associated with the actor or entity that is making these changes.'),
  query('fieldValidation', 'string', 'How the server handles unknown fields: Ignore, Warn (default) or Strict.'),
];
const LIST_PARAMS = ['allowWatchBookmarks', 'continue', 'fieldSelector', 'labelSelector', 'limit', 'resourceVersion', 'resourceVersionMatch', 'sendInitialEvents', 'timeoutSeconds', 'watch'].map((n) =>
  query(n, n === 'limit' || n === 'timeoutSeconds' ? 'integer' : n === 'watch' || n === 'allowWatchBookmarks' || n === 'sendInitialEvents' ? 'boolean' : 'string', n),
);
const OBJECT = { schema: { type: 'object' } };
const ok = (code: string): object => ({ [code]: { description: code === '201' ? 'Created' : 'OK', content: { 'application/json': OBJECT, 'application/yaml': OBJECT } } });

function operations(t: ResourceType, item: boolean, sub?: string): Record<string, object> {
  const gvk = { group: t.group, kind: t.kind, version: t.version };
  const ext = (action: string): object => ({ 'x-kubernetes-action': action, 'x-kubernetes-group-version-kind': gvk });
  const id = (verb: string): string => `${verb}${t.kind}${sub ? 'Status' : ''}${item ? '' : 'Collection'}`;
  const body = (types: string[]): object => ({ required: true, content: Object.fromEntries(types.map((ct) => [ct, OBJECT])) });
  if (!item) {
    return {
      get: { operationId: id('list'), parameters: LIST_PARAMS, responses: ok('200'), ...ext('list') },
      post: { operationId: id('create'), parameters: WRITE_PARAMS, requestBody: body(['application/json', 'application/yaml']), responses: { ...ok('200'), ...ok('201') }, ...ext('post') },
      delete: { operationId: id('deletecollection'), parameters: LIST_PARAMS, responses: ok('200'), ...ext('deletecollection') },
    };
  }
  const ops: Record<string, object> = {
    get: { operationId: id('read'), responses: ok('200'), ...ext('get') },
    put: { operationId: id('replace'), parameters: WRITE_PARAMS, requestBody: body(['application/json', 'application/yaml']), responses: { ...ok('200'), ...ok('201') }, ...ext('put') },
    patch: {
      operationId: id('patch'),
      parameters: [...WRITE_PARAMS, query('force', 'boolean', 'Force is going to "force" Apply requests.')],
      requestBody: body(['application/apply-patch+yaml', 'application/json-patch+json', 'application/merge-patch+json']),
      responses: { ...ok('200'), ...ok('201') },
      ...ext('patch'),
    },
  };
  if (!sub) ops.delete = { operationId: id('delete'), parameters: [query('dryRun', 'string', 'dryRun')], responses: ok('200'), ...ext('delete') };
  return ops;
}

const pathParam = (name: string): object => ({ name, in: 'path', required: true, schema: { type: 'string', uniqueItems: true } });

/** The OpenAPI v3 document of one group/version, or undefined when it is not served. */
export function openApiV3Document(registry: Registry, group: string, version: string): object | undefined {
  if (!registry.hasGroupVersion(group, version)) return undefined;
  const prefix = group ? `/apis/${group}/${version}` : `/api/${version}`;
  const paths: Record<string, object> = {};
  for (const t of registry.resources(group, version)) {
    const base = t.namespaced ? `${prefix}/namespaces/{namespace}/${t.resource}` : `${prefix}/${t.resource}`;
    const nsParams = t.namespaced ? [pathParam('namespace')] : [];
    paths[base] = { parameters: nsParams, ...operations(t, false) };
    paths[`${base}/{name}`] = { parameters: [pathParam('name'), ...nsParams], ...operations(t, true) };
    if (t.status) paths[`${base}/{name}/status`] = { parameters: [pathParam('name'), ...nsParams], ...operations(t, true, 'status') };
    if (t.namespaced) paths[`${prefix}/${t.resource}`] = { get: { operationId: `list${t.kind}ForAllNamespaces`, parameters: LIST_PARAMS, responses: ok('200'), 'x-kubernetes-action': 'list', 'x-kubernetes-group-version-kind': { group: t.group, kind: t.kind, version: t.version } } };
  }
  return { openapi: '3.0.0', info: { title: 'Kubernetes (raven lab)', version: 'v1.32.0' }, paths, components: { schemas: {} } };
}

function hashOf(doc: object): string {
  return createHash('sha512').update(JSON.stringify(doc)).digest('hex').toUpperCase().slice(0, 128);
}

/** `/openapi/v3`: where each group/version document lives, with a content hash so clients' caches follow CRD changes. */
export function openApiV3Index(registry: Registry): object {
  const paths: Record<string, { serverRelativeURL: string }> = {};
  for (const g of registry.groups())
    for (const v of g.versions) {
      const key = g.name ? `apis/${g.name}/${v}` : `api/${v}`;
      paths[key] = { serverRelativeURL: `/openapi/v3/${key}?hash=${hashOf(openApiV3Document(registry, g.name, v)!)}` };
    }
  return { paths };
}

/** Minimal `/openapi/v2` (gnostic openapi_v2.Document: swagger=1, info=2 {title=1, version=2}, paths=8), protobuf-encoded as kubectl requests it. */
export function openApiV2Protobuf(): Buffer {
  const str = (field: number, v: string): Buffer => {
    const b = Buffer.from(v, 'utf8');
    return Buffer.concat([Buffer.from([(field << 3) | 2, b.length]), b]);
  };
  const info = Buffer.concat([str(1, 'Kubernetes (raven lab)'), str(2, 'v1.32.0')]);
  return Buffer.concat([str(1, '2.0'), Buffer.from([(2 << 3) | 2, info.length]), info, Buffer.from([(8 << 3) | 2, 0])]);
}

export const OPENAPI_V2_JSON = { swagger: '2.0', info: { title: 'Kubernetes (raven lab)', version: 'v1.32.0' }, paths: {} };
