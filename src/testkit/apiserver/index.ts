/**
 * An in-process Kubernetes API server for integration tests and `raven lab`: plain HTTP, no auth,
 * real storage/watch/patch semantics (see docs/0002-embedded-apiserver.md for what is cut).
 *
 *   const api = await startApiServer({ crds });
 *   kc.loadFromString(api.kubeconfigYaml());
 *   api.faults.failNext({ method: 'GET', path: '/api/v1/configmaps', status: 500 });
 *   await api.close();
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { ApiError } from './errors.js';
import { FaultInjector, type Faults } from './faults.js';
import { Handlers, type RequestRecord } from './handlers.js';
import { Store } from './store.js';
import { WatchHub } from './watch.js';

export type { Faults, FailRule, FailHandle, RequestMatch } from './faults.js';
export type { RequestRecord } from './handlers.js';
export { ApiError } from './errors.js';

export interface ApiServerOptions {
  /** TCP port; 0 (default) picks a free one. */
  port?: number;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Events kept for watch resumption (default 1000); older resourceVersions get 410 Expired. */
  historyLimit?: number;
  /** CustomResourceDefinition objects to create before serving. */
  crds?: readonly object[];
  /** Interval of BOOKMARK events on watches that allow them (default 5000 ms). */
  bookmarkIntervalMs?: number;
}

export interface ApiServer {
  /** http://host:port */
  readonly url: string;
  readonly port: number;
  readonly host: string;
  /** A kubeconfig (cluster, token user, context "raven-lab", namespace default) pointing at this server. */
  /** `server` replaces the URL, for clients that reach this server through a forwarder. */
  kubeconfigYaml(options?: { name?: string; namespace?: string; server?: string }): string;
  readonly faults: Faults;
  /** Current global resourceVersion. */
  resourceVersion(): string;
  /** Open watch streams. */
  openWatches(): number;
  /** Requests served so far (method, path, query, watch, status), oldest first; the last 2000. */
  requests(): RequestRecord[];
  clearRequests(): void;
  /** Stops listening, ends watches and closes every connection. */
  close(): Promise<void>;
}

export async function startApiServer(options: ApiServerOptions = {}): Promise<ApiServer> {
  const host = options.host ?? '127.0.0.1';
  const store = new Store(options.historyLimit ?? 1000);
  const crdType = store.type('apiextensions.k8s.io', 'v1', 'customresourcedefinitions');
  for (const crd of options.crds ?? []) {
    try {
      store.create(crdType, '', crd, { fieldManager: 'raven-lab' });
    } catch (e) {
      if (e instanceof ApiError) throw new Error(`CRD ${(crd as any)?.metadata?.name ?? '?'}: ${e.message}`);
      throw e;
    }
  }
  const bookmarkMs = options.bookmarkIntervalMs ?? 5000;
  const hub = new WatchHub(store, () => bookmarkMs);
  const faults = new FaultInjector({ dropWatches: (mode) => hub.dropAll(mode), compact: () => store.compact() });
  let address = `${host}:0`;
  const handlers = new Handlers(store, hub, faults, () => address);
  const server: Server = createServer((req, res) => void handlers.handle(req, res));
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  address = `${urlHost}:${port}`;
  const url = `http://${address}`;
  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    host,
    faults,
    kubeconfigYaml: ({ name = 'raven-lab', namespace = 'default', server = url } = {}) =>
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        // client-node refuses plain http unless insecure-skip-tls-verify is set; kubectl ignores it for http.
        clusters: [{ name, cluster: { server, 'insecure-skip-tls-verify': true } }],
        users: [{ name, user: { token: 'raven-lab' } }],
        contexts: [{ name, context: { cluster: name, user: name, namespace } }],
        'current-context': name,
        preferences: {},
      }),
    resourceVersion: () => store.resourceVersion,
    openWatches: () => hub.open,
    requests: () => handlers.requests(),
    clearRequests: () => handlers.clearRequests(),
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        hub.dropAll('end');
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
}

/** Every apiextensions.k8s.io/v1 CustomResourceDefinition in the YAML/JSON files under the given directories (recursively) or files. */
export function loadCrds(paths: readonly string[]): object[] {
  const out: object[] = [];
  const visit = (p: string): void => {
    if (statSync(p).isDirectory()) {
      for (const name of readdirSync(p).sort()) visit(join(p, name));
      return;
    }
    if (!/\.(ya?ml|json)$/.test(p)) return;
    for (const doc of parseAllDocuments(readFileSync(p, 'utf8'))) {
      if (doc.errors.length) throw new Error(`${p}: ${doc.errors[0]!.message}`);
      const obj = doc.toJS() as any;
      if (obj?.kind === 'CustomResourceDefinition' && obj?.apiVersion === 'apiextensions.k8s.io/v1') out.push(obj);
    }
  };
  for (const p of paths) visit(p);
  return out;
}
