import { ApiObject } from 'cdk8s';
import { Construct } from 'constructs';
import { renderGateway } from '../../contract/gateway.js';
import type { Region } from '../../topology/model.js';

export interface RavenGatewayProps {
  readonly region: Region;
  /** raven-cfg enable-l3-tunnel: when off, no tunnel endpoint is elected (Replicas 0). */
  readonly l3Tunnel: boolean;
  /** raven-cfg enable-l7-proxy: when off, no proxy endpoint is elected (Replicas 0). */
  readonly l7Proxy: boolean;
}

/**
 * One region's Gateway (`raven.openyurt.io/v1beta1`), as the contract renders it
 * (src/contract/gateway.ts, `renderGateway`): typed there, parsed there by the runtime.
 */
export class RavenGateway extends Construct {
  constructor(scope: Construct, id: string, props: RavenGatewayProps) {
    super(scope, id);
    new ApiObject(this, 'gateway', renderGateway(props.region, props));
  }
}
