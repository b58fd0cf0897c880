/**
 * JSON Schema (draft-07) of a topology file. The single source of truth: `npm run schema` writes it to
 * schema/topology.schema.json for editors (`# yaml-language-server: $schema=...`), and a test fails
 * when that copy is stale. `x-hint` is our own annotation: how to fix a value that fails its pattern.
 */

import { DNS1123_LABEL_PATTERN, DNS1123_SUBDOMAIN_PATTERN } from './k8s-names.js';
import { DEFAULT_IMAGE } from '../contract/names.js';
import { DNS1123_SUBDOMAIN_MAX, MAX_CLUSTER_NAME_LENGTH } from './limits.js';

export const TOPOLOGY_API_VERSION = 'raven-gitops.io/v1alpha1';
export const TOPOLOGY_KIND = 'Topology';

const dnsLabel = {
  type: 'string',
  pattern: DNS1123_LABEL_PATTERN,
  maxLength: 63,
  'x-hint': 'use lower-case letters, digits and "-", starting and ending with a letter or digit (max 63)',
} as const;

const nodeName = {
  type: 'string',
  pattern: DNS1123_SUBDOMAIN_PATTERN,
  maxLength: DNS1123_SUBDOMAIN_MAX,
  'x-hint': 'a Kubernetes node name: lower-case letters, digits, "-" and ".", each dot-separated part starting and ending with a letter or digit',
} as const;

/** Names of Secrets: Kubernetes object names (DNS-1123 subdomains). */
const secretName = {
  type: 'string',
  pattern: DNS1123_SUBDOMAIN_PATTERN,
  maxLength: DNS1123_SUBDOMAIN_MAX,
  'x-hint': 'a Kubernetes Secret name: lower-case letters, digits, "-" and ".", each dot-separated part starting and ending with a letter or digit',
} as const;

const port = { type: 'integer', minimum: 1, maximum: 65535 } as const;

const cidr = {
  type: 'string',
  minLength: 1,
  description: 'An IPv4 or IPv6 CIDR, e.g. 10.244.0.0/16 or fd00:10:244::/56.',
} as const;

const labelMap = {
  type: 'object',
  minProperties: 1,
  propertyNames: {
    type: 'string',
    // Prefix (a DNS subdomain) and name; their lengths (253 and 63) are checked with a message of their own.
    pattern: '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$',
    maxLength: 317,
    'x-hint': 'a Kubernetes label key such as apps.openyurt.io/nodepool',
  },
  additionalProperties: {
    type: 'string',
    pattern: '^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$',
    maxLength: 63,
    'x-hint': 'a Kubernetes label value (letters, digits, "-", "_", "."; max 63); quote numbers',
  },
} as const;

const secretKeyRef = {
  type: 'object',
  description: 'A key in a Kubernetes Secret in the raven namespace. The secret itself never appears in git.',
  additionalProperties: false,
  required: ['name', 'key'],
  properties: {
    name: secretName,
    key: {
      type: 'string',
      // Kubernetes' IsConfigMapKey: not ".", not "..", not starting with "..".
      pattern: '^(?!\\.\\.)(?!\\.$)[-._a-zA-Z0-9]+$',
      maxLength: DNS1123_SUBDOMAIN_MAX,
      'x-hint': 'a Secret key: letters, digits, "-", "_" and ".", and not ".", ".." or starting with ".."',
    },
  },
} as const;

const endpoint = {
  type: 'object',
  description: 'A node that may become this region\'s gateway. Spec order is priority order.',
  additionalProperties: false,
  required: ['node'],
  dependencies: { port: ['type'] },
  properties: {
    node: { ...nodeName, description: 'Name of the candidate node; it must be a member of the region.' },
    type: {
      enum: ['tunnel', 'proxy'],
      description: 'tunnel (L3 VPN) or proxy (L7). Omit to make the node a candidate for both.',
    },
    port: { ...port, description: 'Port of this endpoint. Default: spec.vpn.port for tunnel, 10262 for proxy.' },
    publicIP: { type: 'string', description: 'Address the other regions dial. Required for exposure PublicIP.' },
  },
} as const;

const region = {
  type: 'object',
  description: 'A network domain: its nodes reach each other directly and reach other regions only through its gateway.',
  additionalProperties: false,
  required: ['name'],
  properties: {
    name: { ...dnsLabel, maxLength: 60, description: 'Region name; the Gateway is named gw-<name>.' },
    type: { enum: ['cloud', 'edge'], default: 'edge', description: 'cloud regions host the controller and relay for NATed edges.' },
    nodeSelector: {
      ...labelMap,
      description: 'Labels selecting member nodes. Default, when `nodes` is not given either: apps.openyurt.io/nodepool=<name>.',
    },
    nodes: {
      type: 'array',
      description: 'Member nodes by name (in addition to nodeSelector).',
      items: nodeName,
      uniqueItems: true,
    },
    podCIDRs: { type: 'array', items: cidr, uniqueItems: true, description: 'Pod address ranges of this region, when known.' },
    underNAT: { type: 'boolean', default: false, description: 'The region reaches other regions only through outbound NAT.' },
    exposure: {
      enum: ['none', 'PublicIP', 'LoadBalancer'],
      default: 'none',
      description: 'How other regions reach this gateway: none, a fixed PublicIP, or a LoadBalancer Service per active endpoint.',
    },
    endpoints: { type: 'array', items: endpoint, description: 'Gateway candidates, in priority order.' },
    replicas: {
      type: 'object',
      additionalProperties: false,
      properties: {
        tunnel: { type: 'integer', minimum: 0, default: 1, description: 'Active tunnel endpoints (the runtime supports 0 or 1).' },
        proxy: { type: 'integer', minimum: 0, default: 1, description: 'Active proxy endpoints.' },
      },
    },
    proxyPorts: {
      type: 'object',
      description: 'Ports cloud components use to reach edge nodes through the L7 proxy.',
      additionalProperties: false,
      properties: {
        http: { type: 'array', items: port, uniqueItems: true },
        https: { type: 'array', items: port, uniqueItems: true },
      },
    },
  },
} as const;

const image = {
  type: 'string',
  pattern: '^[a-z0-9][-a-z0-9._/:]*(@sha256:[a-f0-9]{64}|:[A-Za-z0-9_][-A-Za-z0-9_.]{0,127})$',
  'x-hint': `a pinned image reference such as ${DEFAULT_IMAGE} (a tag or @sha256 digest is required)`,
} as const;

export const topologySchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://raven-gitops.io/schema/topology.schema.json',
  title: 'raven-gitops Topology',
  description: 'One edge cluster\'s network domains, compiled by `raven synth` into Raven Gateways and GitOps manifests.',
  type: 'object',
  additionalProperties: false,
  required: ['apiVersion', 'kind', 'metadata', 'spec'],
  properties: {
    apiVersion: { const: TOPOLOGY_API_VERSION },
    kind: { const: TOPOLOGY_KIND },
    metadata: {
      type: 'object',
      additionalProperties: false,
      required: ['name'],
      properties: {
        name: {
          ...dnsLabel,
          maxLength: MAX_CLUSTER_NAME_LENGTH,
          'x-length-hint': 'Flux names a Kustomization raven-<cluster>-gateways and writes it into a 63-character label',
          description: `Cluster name (at most ${MAX_CLUSTER_NAME_LENGTH} characters); output goes to dist/<name>/.`,
        },
      },
    },
    spec: {
      type: 'object',
      additionalProperties: false,
      required: ['gitops', 'regions'],
      properties: {
        namespace: { ...dnsLabel, default: 'raven-system', description: 'Namespace of the controller, agents and their config.' },
        images: {
          type: 'object',
          additionalProperties: false,
          properties: {
            agent: { ...image, default: DEFAULT_IMAGE },
            controller: { ...image, default: DEFAULT_IMAGE },
          },
        },
        gitops: {
          type: 'object',
          additionalProperties: false,
          required: ['repoURL'],
          properties: {
            repoURL: {
              type: 'string',
              pattern: '^(https://|ssh://|git@)[^\\s]+$',
              'x-hint': 'an https://, ssh:// or git@ repository URL without credentials',
            },
            revision: { type: 'string', minLength: 1, default: 'main', description: 'Branch, tag or commit to sync.' },
            path: { type: 'string', pattern: '^[^/\\s][^\\s]*$', description: 'Repository path of the bundle. Default: dist/<cluster>.' },
            argocd: {
              type: 'object',
              additionalProperties: false,
              description: 'Emit an Argo CD Application (present, even empty, enables it).',
              properties: {
                namespace: { ...dnsLabel, default: 'argocd' },
                project: { ...dnsLabel, default: 'default' },
                server: { type: 'string', pattern: '^https://', default: 'https://kubernetes.default.svc' },
              },
            },
            flux: {
              type: 'object',
              additionalProperties: false,
              description: 'Emit Flux GitRepository and Kustomizations (present, even empty, enables it).',
              properties: {
                namespace: { ...dnsLabel, default: 'flux-system' },
                interval: { type: 'string', pattern: '^([0-9]+(ms|s|m|h))+$', default: '10m', 'x-hint': 'a Go duration such as 5m or 1h30m' },
                secretRef: { ...secretName, description: 'Secret with Git credentials (name only).' },
              },
            },
          },
        },
        vpn: {
          type: 'object',
          additionalProperties: false,
          properties: {
            backend: { enum: ['wireguard', 'ipsec'], default: 'wireguard' },
            port: { ...port, default: 4500, description: 'UDP port of the tunnel on gateway nodes.' },
            psk: {
              type: 'object',
              additionalProperties: false,
              required: ['secretRef'],
              description: 'IPsec pre-shared key, by Secret reference only.',
              properties: { secretRef: secretKeyRef },
            },
            natTraversal: { type: 'boolean', default: false, description: 'Not supported yet: must be false (edge regions reach each other through a reachable gateway).' },
            mtu: { type: 'integer', minimum: 576, maximum: 9000, description: 'Tunnel MTU override. Default: underlayMTU minus the backend overhead.' },
            underlayMTU: { type: 'integer', minimum: 576, maximum: 9216, default: 1500, description: 'MTU of the network between regions.' },
          },
        },
        l3Tunnel: { type: 'boolean', default: true, description: 'raven-cfg enable-l3-tunnel: pod/node routing across regions.' },
        l7Proxy: { type: 'boolean', default: false, description: 'raven-cfg enable-l7-proxy: cloud-to-edge HTTP(S) by node name.' },
        forwardNodeIP: { type: 'boolean', default: false, description: 'Also route node IPs (not only pod CIDRs) across regions.' },
        serviceCIDRs: { type: 'array', items: cidr, uniqueItems: true, description: 'Cluster Service ranges; pod CIDRs must not overlap them.' },
        regions: { type: 'array', items: region, minItems: 1 },
      },
    },
  },
} as const;
