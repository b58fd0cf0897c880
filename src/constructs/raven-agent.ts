import { Construct } from 'constructs';
import { k8s } from 'cdk8s-plus-27';
import { AGENT_HEALTH_PORT, AGENT_METRICS_PORT, GATEWAY_GROUP, PROXY_CERT_DIR, PROXY_CERTS_SECRET } from '../topology/constants.js';
import type { Topology } from '../topology/model.js';
import { LeastPrivilegeAccess } from './least-privilege-access.js';
import { AGENT_CONFIG } from './raven-config.js';

export const AGENT_NAME = 'raven-agent';
/** Host directory where the agent keeps state that must survive restarts (the WireGuard private key). */
export const AGENT_STATE_DIR = '/var/lib/raven';

export interface RavenAgentProps {
  readonly topology: Topology;
  readonly labels: Record<string, string>;
}

/**
 * The per-node agent: a DaemonSet on every node (it tolerates every taint), on the host network,
 * programming routes and tunnels. Its selector is a fixed label, never a construct-path hash, so
 * refactoring this code never produces the immutable-selector error on sync.
 */
export class RavenAgent extends Construct {
  constructor(scope: Construct, id: string, props: RavenAgentProps) {
    super(scope, id);
    const t = props.topology;
    const namespace = t.namespace;
    const selector = { 'app.kubernetes.io/name': AGENT_NAME };
    const labels = { ...props.labels, ...selector, 'app.kubernetes.io/component': 'agent' };

    const access = new LeastPrivilegeAccess(this, 'access', {
      name: AGENT_NAME,
      namespace,
      labels,
      clusterRules: [
        // Reads every Gateway: routes to remote regions come from their status.
        { apiGroups: [GATEWAY_GROUP], resources: ['gateways'], verbs: ['get', 'list', 'watch'] },
      ],
      namespacedRules: [
        { apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch'], resourceNames: [AGENT_CONFIG, 'raven-cfg'] },
        // The per-node heartbeat Lease (raven-agent-<node>). create cannot be limited by name.
        { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create', 'get', 'update', 'patch'] },
        { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
      ],
    });

    const env: k8s.EnvVar[] = [
      { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
      { name: 'NODE_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    ];
    if (t.vpn.backend === 'ipsec' && t.vpn.psk) {
      env.push({ name: 'VPN_CONNECTION_PSK', valueFrom: { secretKeyRef: { name: t.vpn.psk.name, key: t.vpn.psk.key } } });
    }

    new k8s.KubeDaemonSet(this, 'daemon-set', {
      metadata: { name: AGENT_NAME, namespace, labels },
      spec: {
        selector: { matchLabels: selector },
        updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: k8s.IntOrString.fromString('10%') } },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: access.serviceAccountName,
            hostNetwork: true,
            dnsPolicy: 'ClusterFirstWithHostNet',
            priorityClassName: 'system-node-critical',
            tolerations: [{ operator: 'Exists' }],
            // Long enough to remove our routes, rules and tunnels on SIGTERM.
            terminationGracePeriodSeconds: 30,
            containers: [
              {
                name: 'agent',
                image: t.images.agent,
                imagePullPolicy: 'IfNotPresent',
                args: ['agent', '--config-dir=/etc/raven/agent', `--state-dir=${AGENT_STATE_DIR}`],
                env,
                ports: [
                  { name: 'health', containerPort: AGENT_HEALTH_PORT, protocol: 'TCP' },
                  { name: 'metrics', containerPort: AGENT_METRICS_PORT, protocol: 'TCP' },
                  { name: 'tunnel', containerPort: t.vpn.port, protocol: 'UDP' },
                ],
                livenessProbe: { httpGet: { path: '/healthz', port: k8s.IntOrString.fromString('health') }, periodSeconds: 10, failureThreshold: 3 },
                readinessProbe: { httpGet: { path: '/readyz', port: k8s.IntOrString.fromString('health') }, periodSeconds: 5 },
                // No CPU limit: throttling a tunnel endpoint shows up as packet loss.
                resources: {
                  requests: { cpu: k8s.Quantity.fromString('50m'), memory: k8s.Quantity.fromString('64Mi') },
                  limits: { memory: k8s.Quantity.fromString('256Mi') },
                },
                // Privileged: routes, rules and sysctls need NET_ADMIN, and userspace WireGuard and
                // strongSwan's userspace ESP need /dev/net/tun, which only a privileged container may open.
                securityContext: { privileged: true },
                volumeMounts: [
                  { name: 'config', mountPath: '/etc/raven/agent', readOnly: true },
                  { name: 'state', mountPath: AGENT_STATE_DIR },
                  { name: 'lib-modules', mountPath: '/lib/modules', readOnly: true },
                  ...(t.l7Proxy ? [{ name: 'proxy-certs', mountPath: PROXY_CERT_DIR, readOnly: true }] : []),
                ],
              },
            ],
            volumes: [
              { name: 'config', configMap: { name: AGENT_CONFIG } },
              { name: 'state', hostPath: { path: AGENT_STATE_DIR, type: 'DirectoryOrCreate' } },
              { name: 'lib-modules', hostPath: { path: '/lib/modules', type: 'Directory' } },
              // The L7 proxy's mutual-TLS material, referenced, never generated: ca.crt,
              // server.{crt,key} (cloud proxy endpoints), client.{crt,key} (edge ones).
              ...(t.l7Proxy ? [{ name: 'proxy-certs', secret: { secretName: PROXY_CERTS_SECRET, optional: true } }] : []),
            ],
          },
        },
      },
    });
  }
}
