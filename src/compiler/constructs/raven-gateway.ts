import { ApiObject } from 'cdk8s';
import { Construct } from 'constructs';
import {
  GATEWAY_API_VERSION,
  MEMBER_NODES_ANNOTATION,
  REGION_LABEL,
  REGION_TYPE_LABEL,
} from '../../contract/names.js';
import type { Region } from '../../topology/model.js';

export interface RavenGatewayProps {
  readonly region: Region;
  /** raven-cfg enable-l3-tunnel: when off, no tunnel endpoint is elected (Replicas 0). */
  readonly l3Tunnel: boolean;
  /** raven-cfg enable-l7-proxy: when off, no proxy endpoint is elected (Replicas 0). */
  readonly l7Proxy: boolean;
}

/** Annotation carrying the region's known pod CIDRs (comma-separated, sorted). */
export const POD_CIDRS_ANNOTATION = 'raven-gitops.io/pod-cidrs';

/**
 * One region's Gateway (`raven.openyurt.io/v1beta1`), in OpenYurt's shape: it validates against
 * OpenYurt's own CRD. Untyped ApiObject: fields are written verbatim (`publicIP`, `Replicas`).
 */
export class RavenGateway extends Construct {
  constructor(scope: Construct, id: string, props: RavenGatewayProps) {
    super(scope, id);
    const r = props.region;
    const annotations: Record<string, string> = {};
    if (r.nodes.length) annotations[MEMBER_NODES_ANNOTATION] = [...r.nodes].sort().join(',');
    if (r.podCIDRs.length) annotations[POD_CIDRS_ANNOTATION] = [...r.podCIDRs].sort().join(',');

    new ApiObject(this, 'gateway', {
      apiVersion: GATEWAY_API_VERSION,
      kind: 'Gateway',
      metadata: {
        name: r.gatewayName,
        labels: { [REGION_LABEL]: r.name, [REGION_TYPE_LABEL]: r.type },
        ...(Object.keys(annotations).length && { annotations }),
      },
      spec: {
        ...(r.nodeSelector && { nodeSelector: { matchLabels: { ...r.nodeSelector } } }),
        ...(r.exposure !== 'none' && { exposeType: r.exposure }),
        tunnelConfig: { Replicas: props.l3Tunnel ? r.replicas.tunnel : 0 },
        proxyConfig: {
          Replicas: props.l7Proxy ? r.replicas.proxy : 0,
          ...(r.proxyPorts.http.length && { proxyHTTPPort: [...r.proxyPorts.http].sort((a, b) => a - b).join(',') }),
          ...(r.proxyPorts.https.length && { proxyHTTPSPort: [...r.proxyPorts.https].sort((a, b) => a - b).join(',') }),
        },
        endpoints: r.endpoints.map((e) => ({
          nodeName: e.node,
          type: e.type,
          port: e.port,
          underNAT: r.underNAT,
          ...(e.publicIP !== undefined && { publicIP: e.publicIP }),
        })),
      },
    });
  }
}
