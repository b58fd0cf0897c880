/**
 * The lab's kubelet, pure: the OCI runtime spec of each compiled container is what a kubelet would
 * run (arguments and environment as the manifest says, the user, capabilities and memory limit it
 * asks for), and a manifest a kubelet would refuse is refused with the object and the reason.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type * as k8s from '@kubernetes/client-node';
import { capabilitiesOf, containerSpec, expand, type ImageConfig, ManifestError, type Placement, quantityBytes } from '../../src/lab/oci-spec.ts';
import { mustCompile, objectsOf } from '../support/support.ts';

const image: ImageConfig = {
  entrypoint: ['/usr/bin/tini', '--', '/usr/local/bin/node', '/opt/raven/raven.js'],
  cmd: [],
  env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'NODE_ENV=production'],
  user: '65532:65532',
  workingDir: '/',
};
const objects = objectsOf(mustCompile(['topologies/seed.yaml'])).map((x) => x.obj as unknown as k8s.KubernetesObject);
const podOf = (kind: string, name: string): k8s.V1PodSpec => structuredClone((objects.find((o) => o.kind === kind && o.metadata?.name === name) as k8s.V1DaemonSet).spec!.template.spec!);
const placement = (over: Partial<Placement> = {}): Placement => ({
  podName: 'pod-1',
  namespace: 'raven-system',
  nodeName: 'cloud-gw-1',
  hostIP: '10.0.0.10',
  netnsPath: '/var/run/netns/rl-x-n0',
  rootfs: '/lab/image/rootfs',
  cgroupsPath: '/rl-x-agent',
  volumeDir: (v) => `/lab/volumes/${v.name}`,
  extraEnv: ['KUBECONFIG=/k'],
  extraMounts: [],
  privilegedCapabilities: capabilitiesOf('000001fffeffffff'),
  ...over,
});
const envOf = (spec: { process: { env: readonly string[] } }): Map<string, string> => new Map(spec.process.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));

test('the agent: the image entrypoint with the DaemonSet args, fieldRefs resolved, root with every capability, the TUN device, its memory limit', () => {
  const spec = containerSpec(image, podOf('DaemonSet', 'raven-agent-gw-cloud'), 'agent', placement());
  assert.equal(spec.process.args, [...image.entrypoint, 'agent', '--config-dir=/etc/raven/agent', '--state-dir=/var/lib/raven']);
  const env = envOf(spec);
  assert.is(env.get('NODE_NAME'), 'cloud-gw-1');
  assert.is(env.get('NODE_IP'), '10.0.0.10');
  assert.is(env.get('POD_NAMESPACE'), 'raven-system');
  assert.is(env.get('NODE_ENV'), 'production', 'image env kept');
  assert.is(env.get('KUBECONFIG'), '/k');
  assert.equal(spec.process.user, { uid: 0, gid: 0 }, 'the agent runs as root although the image user is not');
  assert.ok(spec.process.capabilities.effective.includes('CAP_NET_ADMIN') && spec.process.capabilities.effective.includes('CAP_SYS_ADMIN'));
  assert.not.ok(spec.process.capabilities.bounding.includes('CAP_SYS_RESOURCE'), 'privileged grants what the runtime holds, no more');
  assert.is(spec.root.readonly, true);
  assert.equal(spec.linux.devices.map((d) => d.path), ['/dev/net/tun']);
  assert.is(spec.linux.resources.memory?.limit, 256 * 1024 * 1024);
  assert.equal(spec.linux.namespaces.find((n) => n.type === 'network'), { type: 'network', path: '/var/run/netns/rl-x-n0' });
  const mounts = new Map(spec.mounts.filter((m) => m.type === 'bind').map((m) => [m.destination, m]));
  assert.is(mounts.get('/etc/raven/agent')?.source, '/lab/volumes/config');
  assert.ok(mounts.get('/etc/raven/agent')?.options.includes('ro'), 'a ConfigMap is read-only');
  assert.ok(mounts.get('/var/lib/raven')?.options.includes('rw'));
});

test('the controller: $(POD_NAMESPACE) expanded, the pod user, no capabilities, no privilege escalation', () => {
  const spec = containerSpec(image, podOf('Deployment', 'raven-controller'), 'controller', placement({ podName: 'raven-controller-0' }));
  assert.equal(spec.process.args.slice(4), ['controller', '--namespace=raven-system', '--leader-elect', '--http-addr=:10276']);
  assert.is(envOf(spec).get('POD_NAME'), 'raven-controller-0');
  assert.equal(spec.process.user, { uid: 65532, gid: 65532 });
  assert.equal(spec.process.capabilities.bounding, []);
  assert.is(spec.process.noNewPrivileges, true);
  assert.is(spec.linux.resources.memory?.limit, 512 * 1024 * 1024);
  assert.equal(spec.linux.devices, []);
  assert.ok(spec.linux.maskedPaths.includes('/proc/kcore'));
});

test('refused as a kubelet would refuse: runAsNonRoot as root, a missing volume, a writable root, an unknown fieldRef', () => {
  const refused = (pod: k8s.V1PodSpec, re: RegExp, at = placement()): void => {
    try {
      containerSpec(image, pod, pod.containers[0]!.name, at);
      assert.unreachable('accepted');
    } catch (err) {
      assert.instance(err, ManifestError);
      assert.match((err as Error).message, re);
    }
  };
  const controller = podOf('Deployment', 'raven-controller');
  controller.securityContext!.runAsUser = 0;
  refused(controller, /runAsNonRoot but would run as uid 0/);
  const writable = podOf('Deployment', 'raven-controller');
  writable.containers[0]!.securityContext!.readOnlyRootFilesystem = false;
  refused(writable, /readOnlyRootFilesystem: true/);
  refused(podOf('DaemonSet', 'raven-agent-gw-cloud'), /volume "config" \(ConfigMap raven-agent-config\) does not exist on node cloud-gw-1/, placement({ volumeDir: () => undefined }));
  const field = podOf('DaemonSet', 'raven-agent-gw-cloud');
  field.containers[0]!.env![0]!.valueFrom!.fieldRef!.fieldPath = 'status.phase';
  refused(field, /fieldRef status.phase/);
});

test('an optional Secret that does not exist is left out; the others are mounted', () => {
  const spec = containerSpec(image, podOf('DaemonSet', 'raven-agent-gw-cloud'), 'agent', placement({ volumeDir: (v) => (v.secret ? undefined : `/v/${v.name}`) }));
  assert.not.ok(spec.mounts.some((m) => m.destination === '/etc/raven/proxy'));
  assert.ok(spec.mounts.some((m) => m.destination === '/etc/raven/agent'));
});

test('$(VAR) expansion follows Kubernetes: defined names replaced, $$ escapes, unknown names kept', () => {
  const env = new Map([['A', 'x'], ['B', '$(A)']]);
  assert.is(expand('--a=$(A) $$(A) $(C) $(B)', env), '--a=x $(A) $(C) $(A)');
  assert.is(quantityBytes('256Mi', 'm'), 268435456);
  assert.is(quantityBytes('1G', 'm'), 1e9);
  assert.throws(() => quantityBytes('12Q', 'limit'), /limit: "12Q"/);
});

test.run();
