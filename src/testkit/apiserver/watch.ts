/**
 * Watch streams: newline-delimited JSON events (`{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":...}`)
 * over a chunked 200 response. Resumes from a resourceVersion out of the store's history (410
 * Expired as an ERROR event when it is too old), or starts with the current state as ADDED.
 * Selector transitions become ADDED/DELETED, as in kube-apiserver's watch cache.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { errors } from './errors.js';
import { apiVersionOf, type ResourceType } from './registry.js';
import { matchesFields, matchesLabels, type FieldSelector, type LabelSelector } from './selectors.js';
import type { Obj, Store, StoredEvent } from './store.js';
import { toTable, type IncludeObject } from './table.js';

export interface WatchRequest {
  type: ResourceType;
  /** Namespace of a namespaced watch; undefined: all namespaces (or cluster-scoped). */
  namespace?: string;
  /** Watch of one object (`.../name?watch=1` or `fieldSelector=metadata.name=`). */
  name?: string;
  labelSelector: LabelSelector;
  fieldSelector: FieldSelector;
  resourceVersion?: string;
  allowWatchBookmarks: boolean;
  sendInitialEvents?: boolean;
  timeoutSeconds?: number;
  /** Render objects as one-row Tables (kubectl get -w). */
  table?: IncludeObject;
}

interface Conn {
  readonly type: ResourceType;
  close(mode: 'reset' | 'end'): void;
}

export class WatchHub {
  private readonly conns = new Set<Conn>();

  constructor(
    private readonly store: Store,
    private readonly bookmarkIntervalMs: () => number,
  ) {
    store.onUnregister((types) => {
      const gone = new Set(types.map((t) => `${t.storageKey}@${t.version}`));
      for (const c of [...this.conns]) if (gone.has(`${c.type.storageKey}@${c.type.version}`)) c.close('end');
    });
  }

  get open(): number {
    return this.conns.size;
  }

  /** Closes every open watch: 'reset' destroys the sockets (a dropped connection), 'end' finishes the streams cleanly. */
  dropAll(mode: 'reset' | 'end' = 'reset'): number {
    const n = this.conns.size;
    for (const c of [...this.conns]) c.close(mode);
    return n;
  }

  serve(req: IncomingMessage, res: ServerResponse, w: WatchRequest): void {
    // The client may be gone already (e.g. it gave up during injected latency): 'close' will not fire again.
    if (res.closed || res.destroyed || req.socket.destroyed) return;
    const { store } = this;
    const t = w.type;
    const matches = (o: Obj | undefined): boolean =>
      o !== undefined &&
      (w.namespace === undefined || !t.namespaced || o.metadata.namespace === w.namespace) &&
      (w.name === undefined || o.metadata.name === w.name) &&
      matchesLabels(w.labelSelector, o.metadata.labels) &&
      matchesFields(w.fieldSelector, t, o);

    res.writeHead(200, {
      'Content-Type': w.table ? 'application/json;as=Table;v=v1;g=meta.k8s.io' : 'application/json',
      'Cache-Control': 'no-cache, private',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();

    let closed = false;
    const write = (type: string, object: Obj): void => {
      if (closed) return;
      res.write(JSON.stringify({ type, object }) + '\n');
    };
    const send = (type: string, object: Obj): void => {
      const presented = store.present(t, object);
      write(type, w.table ? toTable(t, [presented], { resourceVersion: presented.metadata.resourceVersion }, w.table) : presented);
    };

    // Backlog or initial state: computed and subscribed synchronously, so nothing falls in between.
    const rvParam = w.resourceVersion;
    let backlog: StoredEvent[] = [];
    const initial: Obj[] = [];
    if (rvParam !== undefined && rvParam !== '' && !/^\d+$/.test(rvParam)) {
      write('ERROR', errors.badRequest(`resourceVersion: Invalid value: ${JSON.stringify(rvParam)}: must be a non-negative integer`).toStatus());
      res.end();
      return;
    }
    const fromScratch = rvParam === undefined || rvParam === '' || rvParam === '0';
    if (fromScratch || w.sendInitialEvents) {
      initial.push(...store.list(t, w.namespace, { labelSelector: w.labelSelector, fieldSelector: w.fieldSelector }).items.filter(matches));
    }
    if (!fromScratch) {
      const since = store.eventsSince(Number(rvParam));
      if (since === 'expired') {
        write('ERROR', errors.expired(`too old resource version: ${rvParam} (${store.compactedResourceVersion})`).toStatus());
        res.end();
        return;
      }
      if (!w.sendInitialEvents) backlog = since;
    }

    const deliver = (e: StoredEvent): void => {
      if (e.storageKey !== t.storageKey) return;
      const now = e.type === 'DELETED' ? false : matches(e.object);
      const before = e.type === 'ADDED' ? false : matches(e.prev ?? e.object);
      if (e.type === 'DELETED') {
        if (before) send('DELETED', e.object);
      } else if (now && before) send('MODIFIED', e.object);
      else if (now) send('ADDED', e.object);
      else if (before) send('DELETED', e.object);
    };

    const bookmark = (initialEventsEnd = false): void => {
      write('BOOKMARK', {
        kind: t.kind,
        apiVersion: apiVersionOf(t.group, t.version),
        metadata: { resourceVersion: store.resourceVersion, ...(initialEventsEnd ? { annotations: { 'k8s.io/initial-events-end': 'true' } } : {}) },
      });
    };

    for (const o of initial) send('ADDED', o);
    if (w.sendInitialEvents && w.allowWatchBookmarks) bookmark(true);
    for (const e of backlog) deliver(e);
    const unsubscribe = store.subscribe(deliver);

    const timers: NodeJS.Timeout[] = [];
    if (w.allowWatchBookmarks) timers.push(setInterval(() => bookmark(), Math.max(10, this.bookmarkIntervalMs())));
    if (w.timeoutSeconds !== undefined && w.timeoutSeconds > 0) timers.push(setTimeout(() => conn.close('end'), w.timeoutSeconds * 1000));

    const cleanup = (): void => {
      if (closed) return;
      closed = true;
      unsubscribe();
      for (const tm of timers) clearTimeout(tm);
      this.conns.delete(conn);
    };
    const conn: Conn = {
      type: t,
      close: (mode) => {
        const wasClosed = closed;
        cleanup();
        if (wasClosed) return;
        if (mode === 'reset') {
          res.destroy();
          req.socket.destroy();
        } else res.end();
      },
    };
    this.conns.add(conn);
    res.on('close', cleanup);
  }
}
