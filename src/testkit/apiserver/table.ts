/**
 * Server-side printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), which is what
 * `kubectl get` asks for: CRD additionalPrinterColumns evaluated with a JSONPath subset, a few
 * columns for built-ins, Name and Age otherwise.
 */
import type { PrinterColumn, ResourceType } from './registry.js';

type Obj = Record<string, any>;

/** k8s.io/apimachinery duration.HumanDuration. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) return hours % 24 === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${hours % 24}h`;
  const days = Math.floor(hours / 24);
  if (hours < 24 * 365 * 2) return `${days}d`;
  if (hours < 24 * 365 * 8) return days % 365 === 0 ? `${Math.floor(days / 365)}y` : `${Math.floor(days / 365)}y${days % 365}d`;
  return `${Math.floor(days / 365)}y`;
}

const age = (ts: unknown): string => (typeof ts === 'string' ? humanDuration(Date.now() - Date.parse(ts)) : '<unknown>');

// ---------------------------------------------------------------- JSONPath subset

type Step = { field: string } | { index: number } | { all: true } | { filter: { path: string[]; op: '==' | '!='; value: unknown } | { exists: string[] } };

function parseJsonPath(expr: string): Step[] {
  let s = expr.trim();
  if (s.startsWith('{') && s.endsWith('}')) s = s.slice(1, -1);
  if (s.startsWith('$')) s = s.slice(1);
  const steps: Step[] = [];
  let i = 0;
  while (i < s.length) {
    if (s[i] === '.') {
      i++;
      let name = '';
      while (i < s.length && s[i] !== '.' && s[i] !== '[') name += s[i++];
      if (name === '*') steps.push({ all: true });
      else if (name) steps.push({ field: name });
    } else if (s[i] === '[') {
      const end = s.indexOf(']', s[i + 1] === '?' ? s.indexOf(')', i) : i);
      if (end < 0) throw new Error(`unterminated [ in ${expr}`);
      const inner = s.slice(i + 1, end).trim();
      i = end + 1;
      if (inner === '*') steps.push({ all: true });
      else if (/^-?\d+$/.test(inner)) steps.push({ index: Number(inner) });
      else if (/^'.*'$|^".*"$/.test(inner)) steps.push({ field: inner.slice(1, -1) });
      else if (inner.startsWith('?(') && inner.endsWith(')')) {
        const cond = inner.slice(2, -1).trim();
        const m = /^@((?:\.[^\s=!]+)+)\s*(==|!=)\s*(.+)$/.exec(cond);
        if (m) {
          const raw = m[3]!.trim();
          const value = /^'.*'$|^".*"$/.test(raw) ? raw.slice(1, -1) : raw === 'true' ? true : raw === 'false' ? false : Number(raw);
          steps.push({ filter: { path: m[1]!.slice(1).split('.'), op: m[2] as '==' | '!=', value } });
        } else if (/^@((?:\.[^\s=!]+)+)$/.test(cond)) steps.push({ filter: { exists: cond.slice(2).split('.') } });
        else throw new Error(`unsupported filter ${cond}`);
      } else throw new Error(`unsupported JSONPath segment [${inner}]`);
    } else throw new Error(`unexpected ${JSON.stringify(s[i])} in JSONPath ${expr}`);
  }
  return steps;
}

function walk(v: unknown, path: string[]): unknown {
  let cur: any = v;
  for (const p of path) cur = cur === null || typeof cur !== 'object' ? undefined : cur[p];
  return cur;
}

export function evalJsonPath(expr: string, obj: unknown): unknown[] {
  let current: unknown[] = [obj];
  for (const step of parseJsonPath(expr)) {
    const next: unknown[] = [];
    for (const v of current) {
      if (v === null || v === undefined) continue;
      if ('field' in step) {
        if (typeof v === 'object' && !Array.isArray(v) && Object.hasOwn(v as object, step.field)) next.push((v as Obj)[step.field]);
      } else if ('index' in step) {
        if (Array.isArray(v)) {
          const x = v[step.index < 0 ? v.length + step.index : step.index];
          if (x !== undefined) next.push(x);
        }
      } else if ('all' in step) {
        if (Array.isArray(v)) next.push(...v);
        else if (typeof v === 'object') next.push(...Object.values(v as object));
      } else {
        const items = Array.isArray(v) ? v : [v];
        const f = step.filter;
        for (const item of items) {
          if ('exists' in f) {
            if (walk(item, f.exists) !== undefined) next.push(item);
          } else {
            const got = walk(item, f.path);
            if ((got === f.value) === (f.op === '==')) next.push(item);
          }
        }
      }
    }
    current = next;
  }
  return current;
}

// ---------------------------------------------------------------- tables

interface Column {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
  cell: (o: Obj) => unknown;
}

const col = (name: string, cell: (o: Obj) => unknown, type = 'string', format = '', priority = 0): Column => ({ name, type, format, description: name, priority, cell });
const nameCol = col('Name', (o) => o.metadata?.name, 'string', 'name');
nameCol.description = 'Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.';
const ageCol = col('Age', (o) => age(o.metadata?.creationTimestamp));
const count = (m: unknown): number => (m && typeof m === 'object' ? Object.keys(m).length : 0);

function builtinColumns(t: ResourceType): Column[] {
  switch (t.storageKey) {
    case '/namespaces':
      return [nameCol, col('Status', (o) => o.status?.phase ?? ''), ageCol];
    case '/nodes':
      return [nameCol, col('Status', (o) => (o.status?.conditions ?? []).find((c: Obj) => c.type === 'Ready')?.status === 'True' ? 'Ready' : 'NotReady'), ageCol];
    case '/configmaps':
      return [nameCol, col('Data', (o) => count(o.data) + count(o.binaryData), 'integer'), ageCol];
    case '/secrets':
      return [nameCol, col('Type', (o) => o.type ?? ''), col('Data', (o) => count(o.data), 'integer'), ageCol];
    case '/services':
      return [
        nameCol,
        col('Type', (o) => o.spec?.type ?? ''),
        col('Cluster-IP', (o) => o.spec?.clusterIP ?? '<none>'),
        col('External-IP', (o) => (o.status?.loadBalancer?.ingress ?? []).map((i: Obj) => i.ip ?? i.hostname).join(',') || (o.spec?.externalIPs ?? []).join(',') || '<none>'),
        col('Port(s)', (o) => (o.spec?.ports ?? []).map((p: Obj) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol ?? 'TCP'}`).join(',') || '<none>'),
        ageCol,
      ];
    case 'coordination.k8s.io/leases':
      return [nameCol, col('Holder', (o) => o.spec?.holderIdentity ?? ''), ageCol];
    case 'apiextensions.k8s.io/customresourcedefinitions':
      return [nameCol, col('Created At', (o) => o.metadata?.creationTimestamp ?? '', 'date')];
    case 'apps/deployments':
      return [nameCol, col('Ready', (o) => `${o.status?.readyReplicas ?? 0}/${o.spec?.replicas ?? 1}`), col('Up-to-date', (o) => o.status?.updatedReplicas ?? 0, 'integer'), col('Available', (o) => o.status?.availableReplicas ?? 0, 'integer'), ageCol];
    case 'apps/daemonsets':
      return [nameCol, col('Desired', (o) => o.status?.desiredNumberScheduled ?? 0, 'integer'), col('Current', (o) => o.status?.currentNumberScheduled ?? 0, 'integer'), col('Ready', (o) => o.status?.numberReady ?? 0, 'integer'), ageCol];
    case '/events':
      return [col('Last Seen', (o) => age(o.lastTimestamp ?? o.eventTime ?? o.metadata?.creationTimestamp)), col('Type', (o) => o.type ?? ''), col('Reason', (o) => o.reason ?? ''), col('Object', (o) => `${String(o.involvedObject?.kind ?? '').toLowerCase()}/${o.involvedObject?.name ?? ''}`), col('Message', (o) => o.message ?? '')];
    default:
      return [nameCol, ageCol];
  }
}

function crdColumns(columns: readonly PrinterColumn[]): Column[] {
  if (columns.length === 0) return [nameCol, ageCol];
  return [
    nameCol,
    ...columns.map((c) => ({
      name: c.name,
      type: c.type,
      format: c.format ?? '',
      description: c.description ?? '',
      priority: c.priority ?? 0,
      cell: (o: Obj) => {
        let values: unknown[];
        try {
          values = evalJsonPath(c.jsonPath, o);
        } catch {
          return null;
        }
        // kube-apiserver prints the first match only ("we only support simple JSON path").
        if (values.length === 0) return null;
        const v = values[0];
        if (c.type === 'date') return age(v);
        if (c.type === 'string') return typeof v === 'object' ? JSON.stringify(v) : String(v);
        return v;
      },
    })),
  ];
}

export function columnsFor(t: ResourceType): Column[] {
  return t.crd ? crdColumns(t.printerColumns ?? []) : builtinColumns(t);
}

export type IncludeObject = 'None' | 'Metadata' | 'Object';

export function toTable(t: ResourceType, objects: readonly Obj[], meta: Obj, include: IncludeObject, withColumns = true): Obj {
  const columns = columnsFor(t);
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: meta,
    ...(withColumns ? { columnDefinitions: columns.map(({ cell: _c, ...d }) => d) } : {}),
    rows: objects.map((o) => ({
      cells: columns.map((c) => c.cell(o) ?? null),
      object: include === 'None' ? undefined : include === 'Object' ? o : { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata },
    })),
  };
}

/** True when the Accept header asks for a meta.k8s.io Table. */
export function wantsTable(accept: string | undefined): boolean {
  if (!accept) return false;
  return accept.split(',').some((part) => {
    const params = part.split(';').map((p) => p.trim());
    return params.includes('as=Table') && params.some((p) => p === 'g=meta.k8s.io') && params[0] !== 'application/vnd.kubernetes.protobuf';
  });
}
