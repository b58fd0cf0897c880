import { Construct } from 'constructs';
import { k8s } from 'cdk8s-plus-27';
import { AGENT_HEALTH_PORT, AGENT_METRICS_PORT, AGENT_NODE_OPTIONS, IPSEC_SECRET_DIR, PROXY_CERT_DIR, PROXY_CERTS_VOLUME, PSK_FILE_NAME, PSK_VOLUME, WIREGUARD_RUN_DIR } from '../../contract/names.js';
import type { SecretKeyRef, Topology } from '../../topology/model.js';
import { AGENT_CONFIG } from './raven-config.js';

/** Host directory where the agent keeps state that must survive restarts (the WireGuard private key). */
export const AGENT_STATE_DIR = '/var/lib/raven';

/** Which nodes a DaemonSet runs on, by name: only these, or all but these. */
export interface NodePlacement {
  readonly operator: 'In' | 'NotIn';
  /** Node names; sorted when rendered. An empty `NotIn` list places the DaemonSet on every node. */
  readonly nodes: readonly string[];
}

export interface AgentDaemonSetProps {
  readonly topology: Topology;
  readonly name: string;
  /** Fixed labels selecting this DaemonSet's pods, disjoint from every other agent DaemonSet's. */
  readonly selector: Record<string, string>;
  readonly labels: Record<string, string>;
  readonly serviceAccountName: string;
  readonly placement: NodePlacement;
  /** The IPsec PSK Secret, mounted read-only as `IPSEC_SECRET_DIR/psk`. @default none: the PSK is not on these nodes */
  readonly psk?: SecretKeyRef;
  /** A proxy Secret, mounted read-only at PROXY_CERT_DIR. @default none */
  readonly proxySecret?: string;
}

/**
 * One agent DaemonSet: on the host network, programming routes and tunnels, on the nodes its
 * placement names. The compiler makes one for the nodes that can never be a gateway (no Secret) and
 * one per region for that region's gateway candidates (its PSK and proxy Secret), from this
 * construct. Selectors are fixed labels, never construct-path hashes, so refactoring this code never
 * produces the immutable-selector error on sync.
 */
export class AgentDaemonSet extends Construct {
  constructor(scope: Construct, id: string, props: AgentDaemonSetProps) {
    super(scope, id);
    const t = props.topology;
    const labels = { ...props.labels, ...props.selector };
    // The root filesystem is read-only; these two are all the agent and what it starts write: the
    // state dir (WireGuard key, PID files, the L7 proxy's config, charon's config, vici socket and
    // log; charon's own /run is a tmpfs in its private mount namespace) and wireguard-go's sockets.
    // Nothing writes to /tmp, so there is no emptyDir.
    const mounts: k8s.VolumeMount[] = [
      { name: 'config', mountPath: '/etc/raven/agent', readOnly: true },
      { name: 'state', mountPath: AGENT_STATE_DIR },
      { name: 'wireguard-run', mountPath: WIREGUARD_RUN_DIR },
      { name: 'lib-modules', mountPath: '/lib/modules', readOnly: true },
    ];
    const volumes: k8s.Volume[] = [
      { name: 'config', configMap: { name: AGENT_CONFIG } },
      { name: 'state', hostPath: { path: AGENT_STATE_DIR, type: 'DirectoryOrCreate' } },
      // wireguard-go's UAPI sockets (the path is compiled into wireguard-go and `wg`): a hostPath, not
      // an emptyDir, so the next agent finds the socket of a device it adopts.
      { name: 'wireguard-run', hostPath: { path: WIREGUARD_RUN_DIR, type: 'DirectoryOrCreate' } },
      { name: 'lib-modules', hostPath: { path: '/lib/modules', type: 'Directory' } },
    ];
    if (props.psk) {
      // A file, not an environment variable: an environment stays readable in /proc/<pid>/environ
      // and through `kubectl exec ... env` for the life of the process. Readable by root only.
      mounts.push({ name: PSK_VOLUME, mountPath: IPSEC_SECRET_DIR, readOnly: true });
      volumes.push({ name: PSK_VOLUME, secret: { secretName: props.psk.name, items: [{ key: props.psk.key, path: PSK_FILE_NAME }], defaultMode: 0o400 } });
    }
    if (props.proxySecret) {
      // The region's L7 proxy material, referenced, never generated. Optional: a region may run
      // its tunnel before its proxy certificates exist.
      mounts.push({ name: PROXY_CERTS_VOLUME, mountPath: PROXY_CERT_DIR, readOnly: true });
      volumes.push({ name: PROXY_CERTS_VOLUME, secret: { secretName: props.proxySecret, optional: true, defaultMode: 0o400 } });
    }

    new k8s.KubeDaemonSet(this, 'daemon-set', {
      metadata: { name: props.name, namespace: t.namespace, labels },
      spec: {
        selector: { matchLabels: props.selector },
        updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: k8s.IntOrString.fromString('10%') } },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: props.serviceAccountName,
            hostNetwork: true,
            dnsPolicy: 'ClusterFirstWithHostNet',
            priorityClassName: 'system-node-critical',
            tolerations: [{ operator: 'Exists' }],
            ...placementAffinity(props.placement),
            // Long enough to remove our routes, rules and tunnels on SIGTERM.
            terminationGracePeriodSeconds: 30,
            containers: [
              {
                name: 'agent',
                image: t.images.agent,
                imagePullPolicy: 'IfNotPresent',
                args: ['agent', '--config-dir=/etc/raven/agent', `--state-dir=${AGENT_STATE_DIR}`],
                env: [
                  { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
                  { name: 'NODE_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
                  { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                  { name: 'NODE_OPTIONS', value: AGENT_NODE_OPTIONS },
                ],
                ports: [
                  { name: 'health', containerPort: AGENT_HEALTH_PORT, protocol: 'TCP' },
                  { name: 'metrics', containerPort: AGENT_METRICS_PORT, protocol: 'TCP' },
                  { name: 'tunnel', containerPort: t.vpn.port, protocol: 'UDP' },
                ],
                livenessProbe: { httpGet: { path: '/healthz', port: k8s.IntOrString.fromString('health') }, periodSeconds: 10, failureThreshold: 3 },
                readinessProbe: { httpGet: { path: '/readyz', port: k8s.IntOrString.fromString('health') }, periodSeconds: 5 },
                // No CPU limit: throttling a tunnel endpoint shows up as packet loss. Memory from
                // `npm run bench:soak` (README, Benchmarks): the pod's cgroup holds the agent and what
                // it starts, with AGENT_NODE_OPTIONS' V8 limits. Requests: the agent and wireguard-go at
                // steady state (~107 MiB), plus the L7 proxy (~63 MiB) where a proxy Secret is mounted.
                // Limit: ≥ 50 % over the largest pod's peak (agent + proxy + wireguard-go, 164 MiB).
                resources: {
                  requests: { cpu: k8s.Quantity.fromString('50m'), memory: k8s.Quantity.fromString(props.proxySecret ? '160Mi' : '112Mi') },
                  limits: { memory: k8s.Quantity.fromString('256Mi') },
                },
                // Privileged: routes, rules and sysctls need NET_ADMIN, and userspace WireGuard and
                // strongSwan's userspace ESP need /dev/net/tun, which only a privileged container may open.
                // Root, explicitly: the image's default user is the controller's non-root 65532.
                securityContext: { privileged: true, runAsUser: 0, runAsGroup: 0, readOnlyRootFilesystem: true },
                volumeMounts: mounts,
              },
            ],
            volumes,
          },
        },
      },
    });
  }
}

/**
 * Required node affinity by node name. Kubernetes accepts exactly one value per `matchFields`
 * requirement, so `In` becomes one term per node (terms are ORed) and `NotIn` one requirement per
 * node in a single term (requirements are ANDed).
 */
export function placementAffinity(p: NodePlacement): { affinity?: k8s.Affinity } {
  const nodes = [...new Set(p.nodes)].sort();
  const field = (node: string): k8s.NodeSelectorRequirement => ({ key: 'metadata.name', operator: p.operator, values: [node] });
  if (!nodes.length) {
    if (p.operator === 'In') throw new Error('failed to place an agent DaemonSet: no node named');
    return {};
  }
  const terms: k8s.NodeSelectorTerm[] = p.operator === 'In' ? nodes.map((n) => ({ matchFields: [field(n)] })) : [{ matchFields: nodes.map(field) }];
  return { affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: terms } } } };
}
