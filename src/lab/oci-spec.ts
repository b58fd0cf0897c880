/**
 * What a kubelet would ask its container runtime for, as an OCI runtime spec (`config.json` for
 * `runc run`), from an image's config and one container of a compiled pod template (pure).
 *
 * This is how `raven lab up --image` tests the manifests and the image together: the process, its
 * arguments (`$(VAR)` expanded as the kubelet does), its environment (`fieldRef`s resolved), its user,
 * capabilities, read-only root, volume mounts and memory limit all come from `dist/`, so a wrong
 * argument, a missing mount or a tool missing from the image fails a lab test. What a kubelet does
 * that this does not: probes, restarts, seccomp and AppArmor profiles, /etc/hosts and resolv.conf.
 * No `process.rlimits`: setting RLIMIT_NOFILE/NPROC is refused on some hosts (docs/0005-lab.md).
 */
import type * as k8s from '@kubernetes/client-node';

/** The part of an OCI image config (`config` of the config blob) a container is started from. */
export interface ImageConfig {
  readonly entrypoint: readonly string[];
  readonly cmd: readonly string[];
  readonly env: readonly string[];
  /** `uid[:gid]`, numeric; empty = root. */
  readonly user: string;
  readonly workingDir: string;
}

export interface OciMount {
  readonly destination: string;
  readonly type: string;
  readonly source: string;
  readonly options: readonly string[];
}

/** The subset of the OCI runtime spec 1.0 written here. */
export interface OciSpec {
  readonly ociVersion: '1.0.2';
  readonly root: { readonly path: string; readonly readonly: boolean };
  readonly hostname: string;
  readonly process: {
    readonly terminal: false;
    readonly user: { readonly uid: number; readonly gid: number; readonly additionalGids?: readonly number[] };
    readonly args: readonly string[];
    readonly env: readonly string[];
    readonly cwd: string;
    readonly capabilities: Readonly<Record<'bounding' | 'effective' | 'permitted' | 'inheritable' | 'ambient', readonly string[]>>;
    readonly noNewPrivileges: boolean;
  };
  readonly mounts: readonly OciMount[];
  readonly linux: {
    readonly namespaces: readonly { readonly type: string; readonly path?: string }[];
    readonly cgroupsPath: string;
    readonly resources: { readonly devices: readonly { readonly allow: boolean; readonly access: string; readonly type?: string; readonly major?: number; readonly minor?: number }[]; readonly memory?: { readonly limit: number } };
    readonly devices: readonly { readonly path: string; readonly type: string; readonly major: number; readonly minor: number; readonly fileMode: number; readonly uid: number; readonly gid: number }[];
    readonly maskedPaths: readonly string[];
    readonly readonlyPaths: readonly string[];
  };
}

/** Where one pod runs in the lab, and what the lab provides in place of the kubelet's own mounts. */
export interface Placement {
  readonly podName: string;
  readonly namespace: string;
  readonly nodeName: string;
  readonly hostIP: string;
  /** The pod's network namespace (the node's, with hostNetwork), as a path. */
  readonly netnsPath: string;
  readonly rootfs: string;
  readonly cgroupsPath: string;
  /**
   * The directory on this machine that backs a pod volume: a ConfigMap's or Secret's files, a
   * hostPath of this node, an emptyDir. Undefined when the object is missing: the volume is left out
   * if it is optional, otherwise the container cannot start (as a pod would stay ContainerCreating).
   */
  readonly volumeDir: (volume: k8s.V1Volume) => string | undefined;
  /** Environment the kubelet would add (the API's address) and the lab's own marker. */
  readonly extraEnv: readonly string[];
  /** Mounts the kubelet would add (the service account's credentials). */
  readonly extraMounts: readonly OciMount[];
  /**
   * What `privileged: true` grants: every capability the runtime itself holds (containerd's
   * WithAllCurrentCapabilities), since asking for more fails (`currentCapabilities` in pods.ts).
   */
  readonly privilegedCapabilities: readonly string[];
}

/** A container that could not be started as the manifest says (the message names what and why). */
export class ManifestError extends Error {}

/** The capabilities a container runtime grants by default (containerd's and CRI-O's list). */
const DEFAULT_CAPS = ['CAP_AUDIT_WRITE', 'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_MKNOD', 'CAP_NET_BIND_SERVICE', 'CAP_NET_RAW', 'CAP_SETFCAP', 'CAP_SETGID', 'CAP_SETPCAP', 'CAP_SETUID', 'CAP_SYS_CHROOT'];
/** Linux capabilities by number (capability.h), for reading a process's capability sets. */
export const CAPABILITY_NAMES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID', 'CAP_SETUID',
  'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK',
  'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT', 'CAP_SYS_ADMIN',
  'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE',
  'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

/** The capabilities in a /proc/<pid>/status mask (`CapBnd: 000001fffeffffff`). */
export function capabilitiesOf(hexMask: string): string[] {
  const mask = BigInt(`0x${hexMask}`);
  return CAPABILITY_NAMES.filter((_, bit) => (mask >> BigInt(bit)) & 1n).sort();
}
const MASKED = ['/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list', '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware'];
const READONLY = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];
/** /dev/net/tun: wireguard-go's and kernel-libipsec's device. A privileged container sees the host's devices; this is the one the agent needs. */
const TUN = { path: '/dev/net/tun', type: 'c', major: 10, minor: 200, fileMode: 0o666, uid: 0, gid: 0 };

export function containerSpec(image: ImageConfig, pod: k8s.V1PodSpec, containerName: string, at: Placement): OciSpec {
  const c = pod.containers.find((x) => x.name === containerName);
  if (!c) throw new ManifestError(`no container "${containerName}" (the pod has ${pod.containers.map((x) => x.name).join(', ')})`);
  const sc = c.securityContext ?? {};
  const psc = pod.securityContext ?? {};
  const privileged = sc.privileged === true;
  if (!sc.readOnlyRootFilesystem) throw new ManifestError(`container ${c.name} must set readOnlyRootFilesystem: true (the lab shares one unpacked image between all its containers)`);

  const user = imageUser(image.user);
  const uid = sc.runAsUser ?? psc.runAsUser ?? user.uid;
  const gid = sc.runAsGroup ?? psc.runAsGroup ?? user.gid;
  if ((sc.runAsNonRoot ?? psc.runAsNonRoot) && uid === 0) throw new ManifestError(`container ${c.name} has runAsNonRoot but would run as uid 0 (set runAsUser, or a non-root USER in the image)`);

  const env = containerEnv(c, pod, at);
  const command = c.command ?? image.entrypoint;
  const args = c.args ?? (c.command ? [] : image.cmd);
  const argv = [...command, ...args].map((a) => expand(a, env));
  if (!argv.length) throw new ManifestError(`container ${c.name} has no command: neither the manifest nor the image's Entrypoint/Cmd name one`);

  const caps = privileged ? [...at.privilegedCapabilities].sort() : capabilities(sc.capabilities);
  const effective = uid === 0 ? caps : [];
  return {
    ociVersion: '1.0.2',
    root: { path: at.rootfs, readonly: true },
    hostname: pod.hostNetwork ? at.nodeName : at.podName,
    process: {
      terminal: false,
      user: { uid, gid, ...(psc.supplementalGroups?.length && { additionalGids: psc.supplementalGroups }) },
      args: argv,
      env: [...mergeEnv(image.env, [...env.entries()].map(([k, v]) => `${k}=${v}`)), ...at.extraEnv],
      cwd: c.workingDir ?? (image.workingDir || '/'),
      capabilities: { bounding: caps, effective, permitted: effective, inheritable: [], ambient: [] },
      noNewPrivileges: !privileged && sc.allowPrivilegeEscalation === false,
    },
    mounts: [...baseMounts(privileged), ...volumeMounts(c, pod, at), ...at.extraMounts],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network', path: at.netnsPath }],
      cgroupsPath: at.cgroupsPath,
      resources: {
        devices: privileged ? [{ allow: true, access: 'rwm' }] : [{ allow: false, access: 'rwm' }],
        ...(c.resources?.limits?.memory !== undefined && { memory: { limit: quantityBytes(String(c.resources.limits.memory), `container ${c.name} resources.limits.memory`) } }),
      },
      devices: privileged ? [TUN] : [],
      maskedPaths: privileged ? [] : MASKED,
      readonlyPaths: privileged ? [] : READONLY,
    },
  };
}

/** The image's USER, numeric only (a name would need the image's /etc/passwd, which the kubelet reads and this does not). */
export function imageUser(user: string): { uid: number; gid: number } {
  if (!user) return { uid: 0, gid: 0 };
  const m = /^(\d{1,10})(?::(\d{1,10}))?$/.exec(user);
  if (!m) throw new ManifestError(`image USER "${user}" is not numeric uid[:gid]`);
  return { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) };
}

/** The container's environment in manifest order: values, and the fieldRefs a kubelet resolves. */
function containerEnv(c: k8s.V1Container, pod: k8s.V1PodSpec, at: Placement): Map<string, string> {
  const env = new Map<string, string>();
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env.set(e.name, expand(e.value, env));
    else if (e.valueFrom?.fieldRef) env.set(e.name, fieldRef(e.valueFrom.fieldRef.fieldPath, pod, at, `container ${c.name} env ${e.name}`));
    else if (e.valueFrom) throw new ManifestError(`container ${c.name} env ${e.name}: only value and fieldRef are supported in the lab`);
    else env.set(e.name, '');
  }
  return env;
}

function fieldRef(path: string, pod: k8s.V1PodSpec, at: Placement, what: string): string {
  switch (path) {
    case 'metadata.name':
      return at.podName;
    case 'metadata.namespace':
      return at.namespace;
    case 'spec.nodeName':
      return at.nodeName;
    case 'spec.serviceAccountName':
      return pod.serviceAccountName ?? 'default';
    case 'status.hostIP':
      return at.hostIP;
    case 'status.podIP':
      if (pod.hostNetwork) return at.hostIP;
      throw new ManifestError(`${what}: status.podIP of a pod without hostNetwork is not known in the lab`);
    default:
      throw new ManifestError(`${what}: fieldRef ${path} is not one the lab resolves`);
  }
}

/**
 * Kubernetes' `$(VAR)` expansion in command, args and env values: a defined variable is replaced,
 * `$$` is a literal `$`, anything else is left as written.
 */
export function expand(s: string, env: ReadonlyMap<string, string>): string {
  return s.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (all, name: string | undefined) => (name === undefined ? '$' : (env.get(name) ?? all)));
}

/** Image env first, the container's entries replacing same-named ones. */
function mergeEnv(image: readonly string[], container: readonly string[]): string[] {
  const out = new Map<string, string>();
  for (const kv of [...image, ...container]) out.set(kv.split('=', 1)[0]!, kv);
  return [...out.values()];
}

function capabilities(caps: k8s.V1Capabilities | undefined): string[] {
  const norm = (c: string): string => (c.startsWith('CAP_') ? c : `CAP_${c}`).toUpperCase();
  const drop = new Set((caps?.drop ?? []).map(norm));
  const base = drop.has('CAP_ALL') ? [] : DEFAULT_CAPS.filter((c) => !drop.has(c));
  return [...new Set([...base, ...(caps?.add ?? []).map(norm)])].sort();
}

function baseMounts(privileged: boolean): OciMount[] {
  return [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
    { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', privileged ? 'rw' : 'ro'] },
  ];
}

function volumeMounts(c: k8s.V1Container, pod: k8s.V1PodSpec, at: Placement): OciMount[] {
  const out: OciMount[] = [];
  for (const m of c.volumeMounts ?? []) {
    const volume = (pod.volumes ?? []).find((v) => v.name === m.name);
    if (!volume) throw new ManifestError(`container ${c.name} mounts volume "${m.name}", which the pod does not define`);
    const dir = at.volumeDir(volume);
    if (dir === undefined) {
      const optional = volume.secret?.optional ?? volume.configMap?.optional ?? false;
      if (optional) continue;
      throw new ManifestError(`container ${c.name}: volume "${m.name}" (${describe(volume)}) does not exist on node ${at.nodeName}; the pod would not start`);
    }
    if (m.subPath && !/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(m.subPath)) throw new ManifestError(`container ${c.name}: subPath "${m.subPath}" must be a relative path`);
    const readOnly = m.readOnly === true || volume.secret !== undefined || volume.configMap !== undefined;
    const source = m.subPath ? `${dir}/${m.subPath}` : dir;
    out.push({ destination: m.mountPath, type: 'bind', source, options: ['rbind', readOnly ? 'ro' : 'rw', 'nosuid', 'nodev'] });
  }
  return out;
}

function describe(v: k8s.V1Volume): string {
  if (v.secret) return `Secret ${v.secret.secretName}`;
  if (v.configMap) return `ConfigMap ${v.configMap.name}`;
  if (v.hostPath) return `hostPath ${v.hostPath.path}`;
  return 'a volume type the lab does not provide';
}

const UNITS: Record<string, number> = { '': 1, k: 1e3, M: 1e6, G: 1e9, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 };

/** A Kubernetes quantity of bytes (`256Mi`, `1G`, `1048576`). */
export function quantityBytes(q: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)(k|M|G|Ki|Mi|Gi)?$/.exec(q);
  if (!m) throw new ManifestError(`${what}: "${q}" is not a byte quantity the lab understands`);
  return Math.round(Number(m[1]) * UNITS[m[2] ?? '']!);
}
