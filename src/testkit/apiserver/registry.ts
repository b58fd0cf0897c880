/**
 * Resource registry: which group/version/resource the server serves, with scope, kind, short names,
 * status subresource and (for custom resources) the schema validator. Built-ins are a fixed table;
 * CustomResourceDefinitions add and remove entries at run time. Also renders discovery documents.
 */
import type { StatusCause } from './errors.js';
import { compileCrdSchema, type CrSchema } from './schema.js';

export interface PrinterColumn {
  name: string;
  type: string;
  jsonPath: string;
  description?: string;
  format?: string;
  priority?: number;
}

export interface ResourceType {
  readonly group: string;
  readonly version: string;
  readonly resource: string;
  readonly kind: string;
  readonly listKind: string;
  readonly singular: string;
  readonly namespaced: boolean;
  readonly shortNames: readonly string[];
  readonly categories: readonly string[];
  /** Has a `/status` subresource: main-resource writes keep the old status, status writes change only status. */
  readonly status: boolean;
  /** Served from a CustomResourceDefinition (name of the CRD), or built in. */
  readonly crd?: string;
  /** Objects are stored once per group/resource, whatever the version they were written in. */
  readonly storageKey: string;
  readonly schema?: CrSchema;
  readonly printerColumns?: readonly PrinterColumn[];
  /** Extra field selectors besides metadata.name and metadata.namespace. */
  readonly fieldSelectors?: Readonly<Record<string, (obj: any) => string | undefined>>;
}

export const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'] as const;

export function apiVersionOf(group: string, version: string): string {
  return group ? `${group}/${version}` : version;
}

interface BuiltinSpec {
  group: string;
  version: string;
  resource: string;
  kind: string;
  namespaced: boolean;
  shortNames?: string[];
  categories?: string[];
  status?: boolean;
  fieldSelectors?: Record<string, (obj: any) => string | undefined>;
}

const str = (v: unknown): string | undefined => (v === undefined || v === null ? undefined : String(v));

const BUILTINS: BuiltinSpec[] = [
  { group: '', version: 'v1', resource: 'namespaces', kind: 'Namespace', namespaced: false, shortNames: ['ns'], status: true, fieldSelectors: { 'status.phase': (o) => str(o.status?.phase) } },
  { group: '', version: 'v1', resource: 'nodes', kind: 'Node', namespaced: false, shortNames: ['no'], status: true, fieldSelectors: { 'spec.unschedulable': (o) => String(o.spec?.unschedulable ?? false) } },
  { group: '', version: 'v1', resource: 'pods', kind: 'Pod', namespaced: true, shortNames: ['po'], categories: ['all'], status: true, fieldSelectors: { 'spec.nodeName': (o) => str(o.spec?.nodeName) ?? '', 'status.phase': (o) => str(o.status?.phase) ?? '', 'spec.serviceAccountName': (o) => str(o.spec?.serviceAccountName) ?? '' } },
  { group: '', version: 'v1', resource: 'configmaps', kind: 'ConfigMap', namespaced: true, shortNames: ['cm'] },
  { group: '', version: 'v1', resource: 'secrets', kind: 'Secret', namespaced: true, fieldSelectors: { type: (o) => str(o.type) } },
  { group: '', version: 'v1', resource: 'services', kind: 'Service', namespaced: true, shortNames: ['svc'], categories: ['all'], status: true, fieldSelectors: { 'spec.clusterIP': (o) => str(o.spec?.clusterIP) ?? '', 'spec.type': (o) => str(o.spec?.type) ?? '' } },
  { group: '', version: 'v1', resource: 'endpoints', kind: 'Endpoints', namespaced: true, shortNames: ['ep'] },
  {
    group: '', version: 'v1', resource: 'events', kind: 'Event', namespaced: true, shortNames: ['ev'],
    fieldSelectors: {
      'involvedObject.kind': (o) => str(o.involvedObject?.kind) ?? '',
      'involvedObject.namespace': (o) => str(o.involvedObject?.namespace) ?? '',
      'involvedObject.name': (o) => str(o.involvedObject?.name) ?? '',
      'involvedObject.uid': (o) => str(o.involvedObject?.uid) ?? '',
      'involvedObject.apiVersion': (o) => str(o.involvedObject?.apiVersion) ?? '',
      'involvedObject.resourceVersion': (o) => str(o.involvedObject?.resourceVersion) ?? '',
      'involvedObject.fieldPath': (o) => str(o.involvedObject?.fieldPath) ?? '',
      reason: (o) => str(o.reason) ?? '',
      reportingComponent: (o) => str(o.reportingComponent) ?? '',
      source: (o) => str(o.source?.component) ?? '',
      type: (o) => str(o.type) ?? '',
    },
  },
  { group: '', version: 'v1', resource: 'serviceaccounts', kind: 'ServiceAccount', namespaced: true, shortNames: ['sa'] },
  { group: 'coordination.k8s.io', version: 'v1', resource: 'leases', kind: 'Lease', namespaced: true },
  {
    group: 'events.k8s.io', version: 'v1', resource: 'events', kind: 'Event', namespaced: true, shortNames: ['ev'],
    fieldSelectors: {
      'regarding.kind': (o) => str(o.regarding?.kind) ?? '',
      'regarding.namespace': (o) => str(o.regarding?.namespace) ?? '',
      'regarding.name': (o) => str(o.regarding?.name) ?? '',
      reason: (o) => str(o.reason) ?? '',
      type: (o) => str(o.type) ?? '',
    },
  },
  { group: 'discovery.k8s.io', version: 'v1', resource: 'endpointslices', kind: 'EndpointSlice', namespaced: true },
  { group: 'apiextensions.k8s.io', version: 'v1', resource: 'customresourcedefinitions', kind: 'CustomResourceDefinition', namespaced: false, shortNames: ['crd', 'crds'], categories: ['api-extensions'], status: true },
  { group: 'apps', version: 'v1', resource: 'deployments', kind: 'Deployment', namespaced: true, shortNames: ['deploy'], categories: ['all'], status: true },
  { group: 'apps', version: 'v1', resource: 'daemonsets', kind: 'DaemonSet', namespaced: true, shortNames: ['ds'], categories: ['all'], status: true },
  { group: 'rbac.authorization.k8s.io', version: 'v1', resource: 'roles', kind: 'Role', namespaced: true },
  { group: 'rbac.authorization.k8s.io', version: 'v1', resource: 'clusterroles', kind: 'ClusterRole', namespaced: false },
  { group: 'rbac.authorization.k8s.io', version: 'v1', resource: 'rolebindings', kind: 'RoleBinding', namespaced: true },
  { group: 'rbac.authorization.k8s.io', version: 'v1', resource: 'clusterrolebindings', kind: 'ClusterRoleBinding', namespaced: false },
  { group: 'policy', version: 'v1', resource: 'poddisruptionbudgets', kind: 'PodDisruptionBudget', namespaced: true, shortNames: ['pdb'], status: true },
  // Stored so the compiled bundle applies; never enforced (this server authenticates no one).
  { group: 'admissionregistration.k8s.io', version: 'v1', resource: 'validatingadmissionpolicies', kind: 'ValidatingAdmissionPolicy', namespaced: false, categories: ['api-extensions'], status: true },
  { group: 'admissionregistration.k8s.io', version: 'v1', resource: 'validatingadmissionpolicybindings', kind: 'ValidatingAdmissionPolicyBinding', namespaced: false, categories: ['api-extensions'] },
];

const BUILTIN_GROUPS = new Set(BUILTINS.map((b) => b.group));

/** Sort key of a Kubernetes version string: v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > anything else. */
export function versionPriority(a: string, b: string): number {
  const parse = (v: string): [number, number, number] | undefined => {
    const m = /^v(\d+)(?:(alpha|beta)(\d+))?$/.exec(v);
    if (!m) return undefined;
    return [Number(m[1]), m[2] === undefined ? 3 : m[2] === 'beta' ? 2 : 1, Number(m[3] ?? 0)];
  };
  const pa = parse(a);
  const pb = parse(b);
  if (pa && !pb) return -1;
  if (!pa && pb) return 1;
  if (!pa || !pb) return a < b ? -1 : a > b ? 1 : 0;
  if (pa[1] !== pb[1]) return pb[1] - pa[1];
  if (pa[0] !== pb[0]) return pb[0] - pa[0];
  return pb[2] - pa[2];
}

export class Registry {
  /** groupVersion → resource (plural) → type. */
  private readonly byGroupVersion = new Map<string, Map<string, ResourceType>>();
  /** CRD name → the types it registered. */
  private readonly crdTypes = new Map<string, ResourceType[]>();
  /** Group order of first registration (built-in groups first, as kube-apiserver lists them). */
  private readonly groupOrder: string[] = [];

  constructor() {
    for (const b of BUILTINS) {
      this.add({
        group: b.group,
        version: b.version,
        resource: b.resource,
        kind: b.kind,
        listKind: `${b.kind}List`,
        singular: b.kind.toLowerCase(),
        namespaced: b.namespaced,
        shortNames: b.shortNames ?? [],
        categories: b.categories ?? [],
        status: b.status ?? false,
        storageKey: `${b.group}/${b.resource}`,
        ...(b.fieldSelectors ? { fieldSelectors: b.fieldSelectors } : {}),
      });
    }
  }

  private add(t: ResourceType): void {
    const gv = apiVersionOf(t.group, t.version);
    let m = this.byGroupVersion.get(gv);
    if (!m) this.byGroupVersion.set(gv, (m = new Map()));
    m.set(t.resource, t);
    if (!this.groupOrder.includes(t.group)) this.groupOrder.push(t.group);
  }

  lookup(group: string, version: string, resource: string): ResourceType | undefined {
    return this.byGroupVersion.get(apiVersionOf(group, version))?.get(resource);
  }

  hasGroupVersion(group: string, version: string): boolean {
    return (this.byGroupVersion.get(apiVersionOf(group, version))?.size ?? 0) > 0;
  }

  /** The type in a group/version by kind (for apiVersion/kind checks of request bodies). */
  byKind(group: string, version: string, kind: string): ResourceType | undefined {
    for (const t of this.byGroupVersion.get(apiVersionOf(group, version))?.values() ?? []) if (t.kind === kind) return t;
    return undefined;
  }

  /** Every served version of one stored group/resource. */
  versionsOf(storageKey: string): ResourceType[] {
    const out: ResourceType[] = [];
    for (const m of this.byGroupVersion.values()) for (const t of m.values()) if (t.storageKey === storageKey) out.push(t);
    return out;
  }

  groups(): { name: string; versions: string[]; preferred: string }[] {
    const out: { name: string; versions: string[]; preferred: string }[] = [];
    for (const group of this.groupOrder) {
      const versions: string[] = [];
      for (const [gv, m] of this.byGroupVersion) {
        if (m.size === 0) continue;
        const [g, v] = gv.includes('/') ? (gv.split('/') as [string, string]) : ['', gv];
        if (g === group) versions.push(v);
      }
      if (versions.length === 0) continue;
      versions.sort(versionPriority);
      out.push({ name: group, versions, preferred: versions[0]! });
    }
    return out;
  }

  resources(group: string, version: string): ResourceType[] {
    return [...(this.byGroupVersion.get(apiVersionOf(group, version))?.values() ?? [])].sort((a, b) => (a.resource < b.resource ? -1 : 1));
  }

  /** Registers (or re-registers) the served versions of a CRD. Call validateCrd first. */
  registerCrd(crd: any): ResourceType[] {
    this.unregisterCrd(crd.metadata.name);
    const spec = crd.spec;
    const names = spec.names;
    const types: ResourceType[] = [];
    for (const v of spec.versions as any[]) {
      if (!v.served) continue;
      const t: ResourceType = {
        group: spec.group,
        version: v.name,
        resource: names.plural,
        kind: names.kind,
        listKind: names.listKind ?? `${names.kind}List`,
        singular: names.singular ?? names.kind.toLowerCase(),
        namespaced: spec.scope === 'Namespaced',
        shortNames: names.shortNames ?? [],
        categories: names.categories ?? [],
        status: v.subresources?.status !== undefined && v.subresources?.status !== null,
        crd: crd.metadata.name,
        storageKey: `${spec.group}/${names.plural}`,
        schema: compileCrdSchema(v.schema?.openAPIV3Schema ?? { type: 'object', 'x-kubernetes-preserve-unknown-fields': true }),
        printerColumns: v.additionalPrinterColumns ?? [],
      };
      this.add(t);
      types.push(t);
    }
    this.crdTypes.set(crd.metadata.name, types);
    return types;
  }

  unregisterCrd(name: string): ResourceType[] {
    const types = this.crdTypes.get(name) ?? [];
    for (const t of types) this.byGroupVersion.get(apiVersionOf(t.group, t.version))?.delete(t.resource);
    this.crdTypes.delete(name);
    return types;
  }

  // ---- discovery documents ----

  apiVersions(serverAddress: string): object {
    return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }] };
  }

  apiGroup(name: string): object | undefined {
    const g = this.groups().find((x) => x.name === name && name !== '');
    if (!g) return undefined;
    return {
      kind: 'APIGroup',
      apiVersion: 'v1',
      name,
      versions: g.versions.map((v) => ({ groupVersion: `${name}/${v}`, version: v })),
      preferredVersion: { groupVersion: `${name}/${g.preferred}`, version: g.preferred },
    };
  }

  apiGroupList(): object {
    return { kind: 'APIGroupList', apiVersion: 'v1', groups: this.groups().filter((g) => g.name !== '').map((g) => this.apiGroup(g.name)).map(({ kind: _k, apiVersion: _a, ...rest }: any) => rest) };
  }

  apiResourceList(group: string, version: string): object | undefined {
    if (!this.hasGroupVersion(group, version)) return undefined;
    const resources: object[] = [];
    for (const t of this.resources(group, version)) {
      resources.push({
        name: t.resource,
        singularName: t.singular,
        namespaced: t.namespaced,
        kind: t.kind,
        verbs: [...VERBS],
        ...(t.shortNames.length ? { shortNames: [...t.shortNames] } : {}),
        ...(t.categories.length ? { categories: [...t.categories] } : {}),
      });
      if (t.status) resources.push({ name: `${t.resource}/status`, singularName: '', namespaced: t.namespaced, kind: t.kind, verbs: ['get', 'patch', 'update'] });
    }
    return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersionOf(group, version), resources };
  }
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const KIND = /^[A-Z][A-Za-z0-9]*$/;

/**
 * The checks kube-apiserver's CRD validation makes that matter here: name = plural.group, names,
 * scope, one storage version, a schema per version, no reuse of a built-in group. 422 causes.
 */
export function validateCrd(crd: any): StatusCause[] {
  const causes: StatusCause[] = [];
  const bad = (field: string, message: string): void => void causes.push({ reason: 'FieldValueInvalid', field, message });
  const spec = crd?.spec;
  if (!spec || typeof spec !== 'object') return [{ reason: 'FieldValueRequired', field: 'spec', message: 'Required value' }];
  const group = spec.group;
  const names = spec.names ?? {};
  if (typeof group !== 'string' || !group.includes('.') || !DNS1123_SUBDOMAIN.test(group)) bad('spec.group', `Invalid value: ${JSON.stringify(group)}: should be a domain with at least one dot`);
  if (typeof names.plural !== 'string' || !DNS1035_LABEL.test(names.plural)) bad('spec.names.plural', `Invalid value: ${JSON.stringify(names.plural)}: a lowercase RFC 1035 label is required`);
  if (names.singular !== undefined && (typeof names.singular !== 'string' || !DNS1035_LABEL.test(names.singular))) bad('spec.names.singular', `Invalid value: ${JSON.stringify(names.singular)}`);
  if (typeof names.kind !== 'string' || !KIND.test(names.kind)) bad('spec.names.kind', `Invalid value: ${JSON.stringify(names.kind)}: must be a CamelCase name`);
  if (names.listKind !== undefined && (typeof names.listKind !== 'string' || !KIND.test(names.listKind))) bad('spec.names.listKind', `Invalid value: ${JSON.stringify(names.listKind)}`);
  for (const [i, s] of (names.shortNames ?? []).entries()) if (typeof s !== 'string' || !DNS1035_LABEL.test(s)) bad(`spec.names.shortNames[${i}]`, `Invalid value: ${JSON.stringify(s)}`);
  if (causes.length === 0 && crd.metadata?.name !== `${names.plural}.${group}`) bad('metadata.name', `Invalid value: ${JSON.stringify(crd.metadata?.name)}: must be spec.names.plural+"."+spec.group`);
  if (spec.scope !== 'Cluster' && spec.scope !== 'Namespaced') bad('spec.scope', `Unsupported value: ${JSON.stringify(spec.scope)}: supported values: "Cluster", "Namespaced"`);
  if (typeof group === 'string' && BUILTIN_GROUPS.has(group)) bad('spec.group', `Invalid value: ${JSON.stringify(group)}: is a built-in API group`);
  else if (typeof group === 'string' && /(^|\.)(k8s|kubernetes)\.io$/.test(group) && !crd.metadata?.annotations?.['api-approved.kubernetes.io'])
    bad('metadata.annotations[api-approved.kubernetes.io]', `Required value: protected groups must have approval annotation "api-approved.kubernetes.io", see https://github.com/kubernetes/enhancements/pull/1111`);
  const versions = spec.versions;
  if (!Array.isArray(versions) || versions.length === 0) {
    causes.push({ reason: 'FieldValueRequired', field: 'spec.versions', message: 'Required value: must have exactly one version marked as storage version' });
    return causes;
  }
  const seen = new Set<string>();
  let storage = 0;
  for (const [i, v] of versions.entries()) {
    if (typeof v?.name !== 'string' || !DNS1035_LABEL.test(v.name)) bad(`spec.versions[${i}].name`, `Invalid value: ${JSON.stringify(v?.name)}`);
    else if (seen.has(v.name)) causes.push({ reason: 'FieldValueDuplicate', field: `spec.versions[${i}].name`, message: `Duplicate value: ${JSON.stringify(v.name)}` });
    seen.add(v?.name);
    if (typeof v?.served !== 'boolean') causes.push({ reason: 'FieldValueRequired', field: `spec.versions[${i}].served`, message: 'Required value' });
    if (typeof v?.storage !== 'boolean') causes.push({ reason: 'FieldValueRequired', field: `spec.versions[${i}].storage`, message: 'Required value' });
    if (v?.storage === true) storage++;
    const schema = v?.schema?.openAPIV3Schema;
    if (!schema || typeof schema !== 'object') causes.push({ reason: 'FieldValueRequired', field: `spec.versions[${i}].schema.openAPIV3Schema`, message: 'Required value: schemas are required' });
    else if (schema.type !== 'object') bad(`spec.versions[${i}].schema.openAPIV3Schema.type`, `Unsupported value: ${JSON.stringify(schema.type)}: supported values: "object"`);
    else {
      try {
        compileCrdSchema(schema);
      } catch (e) {
        bad(`spec.versions[${i}].schema.openAPIV3Schema`, `Invalid value: ${(e as Error).message}`);
      }
    }
  }
  if (storage !== 1) bad('spec.versions', `Invalid value: must have exactly one version marked as storage version, found ${storage}`);
  if (!versions.some((v: any) => v?.served === true)) bad('spec.versions', 'Invalid value: must have at least one served version');
  return causes;
}
