import { ApiObject, Chart } from 'cdk8s';
import { Construct } from 'constructs';
import type { Topology } from '../../topology/model.js';
import { ArgoCdApplication } from './argocd-application.js';
import { FluxSync, type Layer } from './flux-sync.js';
import { GatewayCrd } from './gateway-crd.js';
import { ProxyService, proxyServicePorts } from './proxy-service.js';
import { RavenAgent } from './raven-agent.js';
import { RavenConfig } from './raven-config.js';
import { RavenController } from './raven-controller.js';
import { RavenGateway } from './raven-gateway.js';
import { RavenNamespace } from './raven-namespace.js';

/** Where each object lands: the three synced layers, plus bootstrap objects applied once by hand. */
export type Bundle = Layer | 'bootstrap';

/**
 * Argo CD sync waves: CRD, then the namespace and the admission policy limiting agents to their own
 * Lease (in force before the first agent starts), then the runtime, then the Gateways.
 */
const WAVE: Record<Layer, string> = { crds: '-2', runtime: '0', gateways: '1' };
const EARLY_WAVE = '-1';
const EARLY_KINDS = new Set(['Namespace', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']);

/** Namespaces we never create or prune: they belong to the cluster. */
const SYSTEM_NAMESPACES = new Set(['default', 'kube-system', 'kube-public', 'kube-node-lease']);

export interface RavenClusterChartProps {
  readonly topology: Topology;
}

/** Everything one cluster needs, as one cdk8s chart with a child scope per bundle. */
export class RavenClusterChart extends Chart {
  readonly topology: Topology;
  private readonly scopes = new Map<Bundle, Construct>();

  constructor(scope: Construct, props: RavenClusterChartProps) {
    const t = props.topology;
    const labels = { 'app.kubernetes.io/part-of': 'raven-gitops', 'raven-gitops.io/cluster': t.cluster };
    super(scope, t.cluster, { disableResourceNameHashes: true, labels });
    this.topology = t;
    const [crds, runtime, gateways, bootstrap] = (['crds', 'runtime', 'gateways', 'bootstrap'] as const).map((b) => {
      const c = new Construct(this, b);
      this.scopes.set(b, c);
      return c;
    }) as [Construct, Construct, Construct, Construct];

    new GatewayCrd(crds, 'gateway-crd');

    // A system namespace is the cluster's: its Pod Security labels are the cluster's business
    // (README, Deploy to a cluster, says which the agents need).
    if (!SYSTEM_NAMESPACES.has(t.namespace)) new RavenNamespace(runtime, 'namespace', { name: t.namespace });
    new RavenConfig(runtime, 'config', { topology: t, labels });
    new RavenController(runtime, 'controller', { topology: t, labels });
    new RavenAgent(runtime, 'agent', { topology: t, labels });
    if (t.l7Proxy && proxyServicePorts(t).length > 0) new ProxyService(runtime, 'proxy', { topology: t, labels });

    for (const region of t.regions) {
      new RavenGateway(gateways, region.name, { region, l3Tunnel: t.l3Tunnel, l7Proxy: t.l7Proxy });
    }

    if (t.gitops.argocd) new ArgoCdApplication(bootstrap, 'argocd', { topology: t });
    if (t.gitops.flux) new FluxSync(bootstrap, 'flux', { topology: t });

    for (const layer of ['crds', 'runtime', 'gateways'] as const) {
      for (const obj of this.objectsIn(layer)) {
        obj.metadata.addAnnotation('argocd.argoproj.io/sync-wave', EARLY_KINDS.has(obj.kind) ? EARLY_WAVE : WAVE[layer]);
      }
    }
  }

  /** The API objects of one bundle, in construct order. */
  objectsIn(bundle: Bundle): ApiObject[] {
    return this.scopes.get(bundle)!.node.findAll().filter((c): c is ApiObject => c instanceof ApiObject);
  }
}
