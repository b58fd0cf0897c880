import { Construct } from 'constructs';
import { k8s } from 'cdk8s-plus-27';
import { CONTROLLER_HTTP_PORT, GATEWAY_GROUP } from '../../contract/names.js';
import type { Topology } from '../../topology/model.js';
import { LeastPrivilegeAccess } from './least-privilege-access.js';

export const CONTROLLER_NAME = 'raven-controller';

export interface RavenControllerProps {
  readonly topology: Topology;
  readonly labels: Record<string, string>;
}

/**
 * The controller: two replicas with Lease-based leader election, electing gateway nodes and writing
 * Gateway status. Prefers cloud-region nodes (near the API server) and spreads across nodes.
 */
export class RavenController extends Construct {
  constructor(scope: Construct, id: string, props: RavenControllerProps) {
    super(scope, id);
    const t = props.topology;
    const namespace = t.namespace;
    const selector = { 'app.kubernetes.io/name': CONTROLLER_NAME };
    const labels = { ...props.labels, ...selector, 'app.kubernetes.io/component': 'controller' };

    const access = new LeastPrivilegeAccess(this, 'access', {
      name: CONTROLLER_NAME,
      namespace,
      labels,
      clusterRules: [
        { apiGroups: [GATEWAY_GROUP], resources: ['gateways'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: [GATEWAY_GROUP], resources: ['gateways/status'], verbs: ['get', 'update', 'patch'] },
        // Membership: nodes matching a Gateway get the raven.openyurt.io/gateway label.
        { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch', 'patch'] },
        // Pod CIDRs under Calico IPAM.
        { apiGroups: ['crd.projectcalico.org'], resources: ['blockaffinities'], verbs: ['get', 'list', 'watch'] },
        // Gateway events (ActiveEndpointElected / ActiveEndpointLost) are recorded on cluster-scoped objects.
        { apiGroups: ['', 'events.k8s.io'], resources: ['events'], verbs: ['create', 'patch'] },
      ],
      namespacedRules: [
        { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch'] },
        // Agent heartbeats (read) and the leader-election Lease (write).
        { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'list', 'watch', 'create'] },
        { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['update', 'patch'], resourceNames: [CONTROLLER_NAME] },
        // LoadBalancer Services fronting active endpoints, and the EndpointSlices pointing them at the node;
        // the L7 proxy's x-raven-proxy-internal-svc is read here, and its EndpointSlices (-ipv4/-ipv6)
        // written here too. Namespaced only: nothing outside the raven namespace.
        { apiGroups: [''], resources: ['services'], verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'] },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'] },
      ],
    });

    const cloudSelectors = t.regions.filter((r) => r.type === 'cloud' && r.nodeSelector).map((r) => r.nodeSelector!);
    const affinity: k8s.Affinity = {
      podAntiAffinity: {
        preferredDuringSchedulingIgnoredDuringExecution: [
          { weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: selector } } },
        ],
      },
      ...(cloudSelectors.length && {
        nodeAffinity: {
          preferredDuringSchedulingIgnoredDuringExecution: cloudSelectors.map((labelsOfRegion) => ({
            weight: 50,
            preference: {
              matchExpressions: Object.entries(labelsOfRegion)
                .sort(([a], [b]) => (a < b ? -1 : 1))
                .map(([key, value]) => ({ key, operator: 'In', values: [value] })),
            },
          })),
        },
      }),
    };

    new k8s.KubeDeployment(this, 'deployment', {
      metadata: { name: CONTROLLER_NAME, namespace, labels },
      spec: {
        replicas: 2,
        selector: { matchLabels: selector },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: access.serviceAccountName,
            priorityClassName: 'system-cluster-critical',
            affinity,
            securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
            containers: [
              {
                name: 'controller',
                image: t.images.controller,
                imagePullPolicy: 'IfNotPresent',
                args: ['controller', '--namespace=$(POD_NAMESPACE)', '--leader-elect', `--http-addr=:${CONTROLLER_HTTP_PORT}`],
                env: [
                  { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
                  { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                ],
                ports: [{ name: 'http', containerPort: CONTROLLER_HTTP_PORT, protocol: 'TCP' }],
                livenessProbe: { httpGet: { path: '/healthz', port: k8s.IntOrString.fromString('http') }, periodSeconds: 10 },
                readinessProbe: { httpGet: { path: '/readyz', port: k8s.IntOrString.fromString('http') }, periodSeconds: 5 },
                // Memory from `npm run bench:soak` (README, Benchmarks): the request is the steady
                // state (~100 MiB); the limit leaves room for caches that grow with Nodes and Leases,
                // which the 6-node lab does not measure.
                resources: {
                  requests: { cpu: k8s.Quantity.fromString('50m'), memory: k8s.Quantity.fromString('112Mi') },
                  limits: { memory: k8s.Quantity.fromString('512Mi') },
                },
                securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
              },
            ],
          },
        },
      },
    });

    new k8s.KubePodDisruptionBudget(this, 'pdb', {
      metadata: { name: CONTROLLER_NAME, namespace, labels },
      spec: { minAvailable: k8s.IntOrString.fromNumber(1), selector: { matchLabels: selector } },
    });

    new k8s.KubeService(this, 'service', {
      metadata: { name: CONTROLLER_NAME, namespace, labels },
      spec: {
        selector,
        ports: [{ name: 'http', port: CONTROLLER_HTTP_PORT, targetPort: k8s.IntOrString.fromString('http'), protocol: 'TCP' }],
      },
    });
  }
}
