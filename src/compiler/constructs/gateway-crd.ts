import { ApiObject } from 'cdk8s';
import { Construct } from 'constructs';
import { GATEWAY_GROUP, GATEWAY_VERSION } from '../../contract/names.js';

/**
 * A JSON Schema with Kubernetes' own field names (`x-kubernetes-list-type`, ...). Written raw: the typed
 * cdk8s mapper does not recurse into `items` of `items`, and let a camelCase `xKubernetesListType` through.
 */
type JsonSchema = Record<string, unknown>;

const str = (description: string): JsonSchema => ({ type: 'string', description });
const int = (description: string, minimum?: number, maximum?: number): JsonSchema => ({
  type: 'integer',
  description,
  ...(minimum !== undefined && { minimum }),
  ...(maximum !== undefined && { maximum }),
});

/**
 * Endpoint, shared by spec.endpoints and status.activeEndpoints. Field-for-field the OpenYurt v1beta1
 * Endpoint; we add enums and ranges, so every object this CRD admits is also valid for OpenYurt's.
 */
const endpointSchema: JsonSchema = {
  type: 'object',
  description: 'A gateway candidate: everything needed to establish its tunnel or proxy.',
  required: ['nodeName', 'type'],
  properties: {
    nodeName: str('Node hosting this endpoint.'),
    type: { type: 'string', enum: ['tunnel', 'proxy'], description: 'tunnel (L3 VPN) or proxy (L7).' },
    port: int('Port other gateways dial.', 1, 65535),
    underNAT: { type: 'boolean', description: 'The node reaches other regions only through NAT.' },
    natType: str('NAT type found by NAT traversal.'),
    publicIP: str('Address other gateways dial.'),
    publicPort: int('Public port found by NAT traversal.', 0, 65535),
    config: {
      type: 'object',
      additionalProperties: { type: 'string' },
      description: 'Agent settings, e.g. publicKey, enable-l3-tunnel, enable-l7-proxy.',
    },
  },
};

const labelSelectorSchema: JsonSchema = {
  type: 'object',
  description: 'Nodes managed by the gateway; they share one L3 network.',
  'x-kubernetes-map-type': 'atomic',
  properties: {
    matchLabels: { type: 'object', additionalProperties: { type: 'string' } },
    matchExpressions: {
      type: 'array',
      'x-kubernetes-list-type': 'atomic',
      items: {
        type: 'object',
        required: ['key', 'operator'],
        properties: {
          key: { type: 'string' },
          operator: { type: 'string', enum: ['In', 'NotIn', 'Exists', 'DoesNotExist'] },
          values: { type: 'array', 'x-kubernetes-list-type': 'atomic', items: { type: 'string' } },
        },
      },
    },
  },
};

/**
 * The Gateway CRD (`gateways.raven.openyurt.io`), v1beta1 served and stored, cluster-scoped. Never
 * pruned or deleted by Argo CD or Flux: deleting a CRD deletes every object of it, so a CRD dropped
 * from a bundle (or an Application deleted) would remove every Gateway and cut every region off.
 */
export class GatewayCrd extends Construct {
  constructor(scope: Construct, id: string) {
    super(scope, id);
    new ApiObject(this, 'crd', {
      apiVersion: 'apiextensions.k8s.io/v1',
      kind: 'CustomResourceDefinition',
      metadata: {
        name: `gateways.${GATEWAY_GROUP}`,
        annotations: { 'argocd.argoproj.io/sync-options': 'Prune=false,Delete=false', 'kustomize.toolkit.fluxcd.io/prune': 'disabled' },
      },
      spec: {
        group: GATEWAY_GROUP,
        names: { kind: 'Gateway', listKind: 'GatewayList', plural: 'gateways', singular: 'gateway', shortNames: ['gw'], categories: ['yurt', 'raven'] },
        scope: 'Cluster',
        versions: [
          {
            name: GATEWAY_VERSION,
            served: true,
            storage: true,
            subresources: { status: {} },
            additionalPrinterColumns: [
              { name: 'Exposure', type: 'string', jsonPath: '.spec.exposeType' },
              { name: 'Tunnel', type: 'string', jsonPath: '.status.activeEndpoints[?(@.type=="tunnel")].nodeName', description: 'Active tunnel endpoint' },
              { name: 'Proxy', type: 'string', jsonPath: '.status.activeEndpoints[?(@.type=="proxy")].nodeName', description: 'Active proxy endpoints' },
              { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
            ],
            schema: {
              openAPIV3Schema: {
                type: 'object',
                description: 'Gateway connects one network domain (region) to the others.',
                properties: {
                  apiVersion: { type: 'string' },
                  kind: { type: 'string' },
                  metadata: { type: 'object' },
                  spec: {
                    type: 'object',
                    properties: {
                      nodeSelector: labelSelectorSchema,
                      exposeType: { type: 'string', enum: ['', 'PublicIP', 'LoadBalancer'], description: 'How other regions reach this gateway.' },
                      endpoints: { type: 'array', items: endpointSchema, description: 'Candidates in priority order.' },
                      tunnelConfig: {
                        type: 'object',
                        required: ['Replicas'],
                        properties: { Replicas: int('Active tunnel endpoints.', 0, 1) },
                      },
                      proxyConfig: {
                        type: 'object',
                        required: ['Replicas'],
                        properties: {
                          Replicas: int('Active proxy endpoints.', 0),
                          proxyHTTPPort: { type: 'string', pattern: '^([0-9]{1,5}(,[0-9]{1,5})*)?$', description: 'Comma-separated HTTP ports proxied to edge nodes.' },
                          proxyHTTPSPort: { type: 'string', pattern: '^([0-9]{1,5}(,[0-9]{1,5})*)?$', description: 'Comma-separated HTTPS ports proxied to edge nodes.' },
                        },
                      },
                    },
                  },
                  status: {
                    type: 'object',
                    properties: {
                      activeEndpoints: { type: 'array', items: endpointSchema },
                      nodes: {
                        type: 'array',
                        items: {
                          type: 'object',
                          required: ['nodeName', 'privateIP', 'subnets'],
                          properties: {
                            nodeName: { type: 'string' },
                            privateIP: { type: 'string' },
                            subnets: { type: 'array', items: { type: 'string' } },
                          },
                        },
                      },
                    },
                  },
                },
              },
            },
          },
        ],
      },
    });
  }
}
