/**
 * Semantic checks on the typed model: everything the schema cannot express. Pure; every finding
 * names the YAML path it is about, says what is wrong and how to fix it. All checks always run,
 * so a user sees every problem at once.
 */
import type { PathSegment, Severity } from './diagnostics.js';
import { formatPath, quote } from './diagnostics.js';
import {
  AGENT_RESERVED_TCP_PORTS,
  BACKEND_MAX_MTU,
  BACKEND_OVERHEAD,
  IPV6_MIN_MTU,
  MAX_TUNNEL_REPLICAS,
} from '../contract/names.js';
import { type Cidr, findOverlaps, parseCidr, parseIp, unroutableReason } from '../platform/cidr.js';
import { MEMBER_NODES_ANNOTATION, POD_CIDRS_ANNOTATION, proxySecretName } from '../contract/names.js';
import { labelKeyProblem } from './k8s-names.js';
import { DNS1123_SUBDOMAIN_MAX, LABEL_VALUE_MAX, MAX_ANNOTATIONS_BYTES } from './limits.js';
import type { Endpoint, Region, Topology } from './model.js';
import { endpointsOfType } from './model.js';
import { buildMesh, isDialable, isExposed, regionEndpoint, regionGateway } from './mesh.js';
import { EXPOSURE_NODE_LABEL, exposureName } from '../contract/names.js';
import { LEASE_PREFIX, leaseName } from '../contract/heartbeat.js';

export interface Finding {
  readonly path: readonly PathSegment[];
  readonly severity: Severity;
  readonly message: string;
  /** Point at the key rather than the value (for fields that should not be there). */
  readonly atKey?: boolean;
}

/** Where a path is, as `file:line:col`, for findings that name a second place (the first of two colliding definitions). */
export type Locate = (path: readonly PathSegment[]) => string;

type Check = (t: Topology, out: Finding[], where: Locate) => void;

const error = (path: readonly PathSegment[], message: string, atKey = false): Finding => ({
  path,
  severity: 'error',
  message,
  ...(atKey && { atKey }),
});
const warning = (path: readonly PathSegment[], message: string): Finding => ({ path, severity: 'warning', message });

/** `where` turns a path into the place a message names; by default the YAML path itself. */
export function check(t: Topology, where: Locate = formatPath): Finding[] {
  const out: Finding[] = [];
  for (const c of CHECKS) c(t, out, where);
  // An endpoint without a type is expanded to a tunnel and a proxy endpoint at the same path, so
  // per-endpoint checks would say the same thing twice: keep one finding per path and message.
  const seen = new Set<string>();
  return out.filter((f) => {
    const key = `${f.path.join('\u0000')}|${f.message}`;
    return seen.has(key) ? false : (seen.add(key), true);
  });
}

const uniqueRegionNames: Check = (t, out) => {
  const seen = new Map<string, Region>();
  // Regions are sorted by name; report the later one in file order.
  for (const r of [...t.regions].sort((a, b) => Number(a.path[2]) - Number(b.path[2]))) {
    const first = seen.get(r.name);
    if (first) {
      out.push(error([...r.path, 'name'], `duplicate region name "${r.name}" (also ${formatPath(first.path)}); give every region its own name`));
    } else seen.set(r.name, r);
  }
};

/** A node belongs to exactly one region, and an endpoint's node must belong to its region. */
const nodeMembership: Check = (t, out) => {
  const owner = new Map<string, { region: Region; path: readonly PathSegment[] }>();
  const claim = (node: string, region: Region, path: readonly PathSegment[]): void => {
    const prev = owner.get(node);
    if (prev && prev.region !== region) {
      out.push(error(path, `node "${node}" is already in region "${prev.region.name}" (${formatPath(prev.path)}); a node belongs to one region`));
    } else if (!prev) owner.set(node, { region, path });
  };
  // Regions are sorted by name; claim in file order, so the later occurrence is the one reported.
  const inFileOrder = [...t.regions].sort((a, b) => Number(a.path[2]) - Number(b.path[2]));
  for (const r of inFileOrder) {
    r.nodes.forEach((n, i) => claim(n, r, [...r.path, 'nodes', i]));
  }
  for (const r of inFileOrder) {
    const seen = new Set<string>();
    const members = new Set(r.nodes);
    for (const e of r.endpoints) {
      const nodePath = [...e.path, 'node'];
      claim(e.node, r, nodePath);
      if (!r.nodeSelector && !members.has(e.node)) {
        out.push(error(nodePath, `endpoint node "${e.node}" is not a member of region "${r.name}"; add it to ${formatPath([...r.path, 'nodes'])} or give the region a nodeSelector that matches it`));
      }
      const key = `${e.node}/${e.type}`;
      if (seen.has(key)) {
        out.push(error(nodePath, `node "${e.node}" is listed twice as a ${e.type} endpoint of region "${r.name}"; list each candidate once`));
      }
      seen.add(key);
    }
  }
};

const addressing: Check = (t, out) => {
  const pods: { cidr: Cidr; region: Region; path: PathSegment[] }[] = [];
  for (const r of t.regions) {
    r.podCIDRs.forEach((text, i) => {
      // podCIDRs are sorted in the model; point at the entry as written.
      const path = [...r.path, 'podCIDRs', i];
      const p = parseCidr(text);
      if (!p.ok) {
        out.push(error(path, p.reason));
        return;
      }
      // Pod ranges are routed to the region's gateway from every other region.
      const unroutable = unroutableReason(p.cidr);
      if (unroutable) out.push(error(path, `pod CIDR ${unroutable}; pod ranges are routed between regions, so list only the region's own pod range (such as 10.244.0.0/16)`));
      else pods.push({ cidr: p.cidr, region: r, path });
    });
  }
  const services: { cidr: Cidr; path: PathSegment[] }[] = [];
  t.serviceCIDRs.forEach((text, i) => {
    const path = ['spec', 'serviceCIDRs', i];
    const p = parseCidr(text);
    if (!p.ok) out.push(error(path, p.reason));
    else services.push({ cidr: p.cidr, path });
  });

  for (const [a, b] of findOverlaps(pods)) {
    const where = a.region === b.region ? 'the same region' : `region "${a.region.name}" (${formatPath(a.path)})`;
    out.push(error(b.path, `pod CIDR ${b.cidr.text} of region "${b.region.name}" overlaps ${a.cidr.text} of ${where}; cross-region routing needs disjoint ranges, pick a range outside ${a.cidr.text}`));
  }
  const ranges: { cidr: Cidr; path: PathSegment[]; region?: Region }[] = [...pods, ...services];
  for (const [a, b] of findOverlaps(ranges)) {
    const [pod, svc] = a.region ? [a, b] : [b, a];
    if (pod.region && !svc.region) {
      out.push(error(pod.path, `pod CIDR ${pod.cidr.text} of region "${pod.region.name}" overlaps the service CIDR ${svc.cidr.text}; pick a pod range outside the service range`));
    }
  }
  for (const r of t.regions) {
    for (const e of r.endpoints) {
      if (e.publicIP !== undefined && parseIp(e.publicIP) === undefined) {
        out.push(error([...e.path, 'publicIP'], `publicIP "${e.publicIP}" is not an IP address; write an IPv4 or IPv6 address such as 203.0.113.10`));
      }
    }
  }
};

const exposure: Check = (t, out) => {
  for (const r of t.regions) {
    if (isExposed(r.exposure) && r.underNAT) {
      out.push(error([...r.path, 'exposure'], `region "${r.name}" is underNAT and exposed by ${r.exposure}; other regions cannot dial a gateway behind NAT: set exposure: none, or underNAT: false if the gateway has a public address`));
    }
    const reported = new Set<number>();
    for (const e of r.endpoints) {
      const idx = Number(e.path[e.path.length - 1]);
      if (reported.has(idx)) continue;
      if (r.exposure === 'LoadBalancer' && e.publicIP !== undefined) {
        reported.add(idx);
        out.push(error([...e.path, 'publicIP'], `publicIP is set on an endpoint of region "${r.name}", which is exposed by LoadBalancer; the address comes from the Service, so remove publicIP or use exposure: PublicIP`, true));
      }
      if (r.exposure === 'PublicIP' && e.publicIP === undefined) {
        reported.add(idx);
        out.push(error(e.path, `endpoint "${e.node}" of region "${r.name}" has no publicIP, but the region is exposed by PublicIP; add publicIP: <address other regions dial>`));
      }
    }
    const hasPorts = r.proxyPorts.http.length + r.proxyPorts.https.length > 0;
    if (hasPorts && !isExposed(r.exposure)) {
      out.push(warning([...r.path, 'proxyPorts'], `proxyPorts of region "${r.name}" are ignored: only exposed regions serve the L7 proxy`));
    }
  }
};

const replicas: Check = (t, out) => {
  for (const r of t.regions) {
    const tunnels = endpointsOfType(r, 'tunnel').length;
    const proxies = endpointsOfType(r, 'proxy').length;
    if (r.replicas.tunnel > MAX_TUNNEL_REPLICAS) {
      out.push(error([...r.path, 'replicas', 'tunnel'], `replicas.tunnel is ${r.replicas.tunnel}, but the runtime keeps at most ${MAX_TUNNEL_REPLICAS} active tunnel endpoint per region; set it to ${MAX_TUNNEL_REPLICAS} and list more endpoints as standbys`));
    }
    if (t.l3Tunnel && t.regions.length > 1 && r.replicas.tunnel > 0 && tunnels === 0) {
      out.push(error(r.endpoints.length ? [...r.path, 'endpoints'] : r.path, `region "${r.name}" has no tunnel endpoint, so no traffic can leave it; add an endpoint (type tunnel or no type) or set replicas.tunnel: 0`));
    }
    if (t.l7Proxy && r.replicas.proxy > proxies && (proxies > 0 || isExposed(r.exposure))) {
      out.push(error([...r.path, 'replicas', 'proxy'], `replicas.proxy is ${r.replicas.proxy}, but region "${r.name}" has only ${proxies} proxy endpoint(s); lower replicas.proxy or add proxy endpoints`));
    }
  }
};

/**
 * Every region must be able to reach every other (src/topology/mesh.ts): an unreachable region
 * (NATed or not exposed) reaches others only by dialing a reachable gateway, which then relays
 * between unreachable ones. NAT types are found at runtime, so no pair is counted on to punch.
 */
const reachability: Check = (t, out) => {
  if (t.regions.length < 2) return;
  if (t.l3Tunnel) {
    const gateways = t.regions.map((r) => ({ ...regionGateway(r), region: r }));
    for (const { region: r } of buildMesh(gateways, { natTraversal: false }).isolated()) {
      const why = r.underNAT ? 'is under NAT' : 'is not exposed';
      out.push(error([...r.path, r.underNAT ? 'underNAT' : 'name'], `region "${r.name}" ${why} and no other region is reachable to relay its tunnels; expose at least one non-NATed region (exposure: PublicIP or LoadBalancer) with a tunnel endpoint`));
    }
  }
  if (t.l7Proxy && !t.regions.some((r) => r.replicas.proxy > 0 && endpointsOfType(r, 'proxy').some((e) => isDialable(r.exposure, regionEndpoint(r, e))))) {
    out.push(error(['spec', 'l7Proxy'], 'l7Proxy is on, but no exposed region has a proxy endpoint for edge proxy clients to dial; expose a cloud region with a proxy endpoint, or set l7Proxy: false'));
  }
};

const ports: Check = (t, out) => {
  for (const r of t.regions) {
    for (const e of r.endpoints) {
      const reserved = AGENT_RESERVED_TCP_PORTS.get(e.port);
      if (e.type === 'proxy' && reserved) {
        out.push(error([...e.path, 'port'], `proxy endpoint port ${e.port} on node "${e.node}" collides with the ${reserved} port the agent listens on; choose another port (default 10262)`));
      }
    }
    const https = new Set(r.proxyPorts.https);
    for (const p of r.proxyPorts.http) {
      if (https.has(p)) {
        out.push(error([...r.path, 'proxyPorts', 'https'], `port ${p} is listed as both HTTP and HTTPS proxy port of region "${r.name}"; a port carries one protocol, remove it from one list`));
      }
    }
  }
  // The in-cluster proxy Service merges the ports of every exposed region.
  const protocolOf = new Map<number, { scheme: string; region: Region }>();
  for (const r of t.regions.filter((x) => isExposed(x.exposure))) {
    for (const scheme of ['http', 'https'] as const) {
      for (const p of r.proxyPorts[scheme]) {
        const prev = protocolOf.get(p);
        // A clash within one region is reported above.
        if (prev && prev.scheme !== scheme && prev.region !== r) {
          out.push(error([...r.path, 'proxyPorts', scheme], `proxy port ${p} is ${scheme.toUpperCase()} in region "${r.name}" but ${prev.scheme.toUpperCase()} in region "${prev.region.name}"; the shared proxy Service needs one protocol per port`));
        } else if (!prev) protocolOf.set(p, { scheme, region: r });
      }
    }
  }
};

const vpn: Check = (t, out) => {
  const overhead = BACKEND_OVERHEAD[t.vpn.backend];
  const room = t.vpn.underlayMTU - overhead;
  const max = BACKEND_MAX_MTU[t.vpn.backend];
  if (t.vpn.mtuOverride !== undefined && t.vpn.mtuOverride > max) {
    out.push(error(['spec', 'vpn', 'mtu'], `mtu ${t.vpn.mtuOverride} is above the ${t.vpn.backend} backend's limit of ${max}: strongSwan's userspace ESP reads at most ${max}-byte packets, so larger ones would drop; use at most ${max}, or remove vpn.mtu to derive it from underlayMTU`));
  } else if (t.vpn.mtuOverride !== undefined && t.vpn.mtuOverride > room) {
    out.push(error(['spec', 'vpn', 'mtu'], `mtu ${t.vpn.mtuOverride} leaves no room for ${t.vpn.backend}'s ${overhead}-byte overhead on a ${t.vpn.underlayMTU}-byte underlay; packets would fragment or drop: use at most ${room}, or raise underlayMTU if the network carries larger frames`));
  }
  const v6 = [...t.regions.flatMap((r) => r.podCIDRs), ...t.serviceCIDRs].some((c) => c.includes(':'));
  if (v6 && t.vpn.mtu < IPV6_MIN_MTU) {
    out.push(error(['spec', 'vpn', t.vpn.mtuOverride !== undefined ? 'mtu' : 'underlayMTU'], `tunnel MTU ${t.vpn.mtu} is below IPv6's minimum of ${IPV6_MIN_MTU}, and the topology has IPv6 ranges; raise it to at least ${IPV6_MIN_MTU}`));
  }
  if (t.vpn.backend === 'ipsec' && !t.vpn.psk && t.l3Tunnel) {
    out.push(error(['spec', 'vpn', 'backend'], 'the ipsec backend needs a pre-shared key; add vpn.psk.secretRef: {name: <secret>, key: <key>} (create the Secret out of band, never in git)'));
  }
  if (t.vpn.natTraversal) {
    out.push(error(['spec', 'vpn', 'natTraversal'], 'NAT traversal is not supported yet: no agent discovers NAT types or public ports, so it would never take effect; remove vpn.natTraversal (edge regions behind NAT reach each other through the cloud gateway)'));
  }
  if (t.vpn.backend === 'wireguard' && t.vpn.psk) {
    out.push(warning(['spec', 'vpn', 'psk'], 'vpn.psk is ignored by the wireguard backend, which uses per-node keys'));
  }
};

/** Regions in file order (the model sorts them by name), so the later of two definitions is the one reported. */
function inFileOrder(t: Topology): Region[] {
  return [...t.regions].sort((a, b) => Number(a.path[2]) - Number(b.path[2]));
}

/**
 * Names that land in Kubernetes as parts of other names or as label values, checked against the
 * limits of where they land: the schema checks each name's own shape.
 */
const kubernetesNames: Check = (t, out) => {
  const maxNode = DNS1123_SUBDOMAIN_MAX - LEASE_PREFIX.length;
  const seen = new Set<string>();
  const node = (name: string, path: readonly PathSegment[]): void => {
    if (seen.has(name)) return;
    seen.add(name);
    const lease = leaseName(name);
    if (lease.length > DNS1123_SUBDOMAIN_MAX) {
      out.push(error(path, `node name is ${name.length} characters, so its agent's heartbeat Lease ${LEASE_PREFIX}<node> would be ${lease.length}, above Kubernetes' ${DNS1123_SUBDOMAIN_MAX}; raven supports node names of at most ${maxNode} characters`));
    }
  };
  for (const r of inFileOrder(t)) {
    r.nodes.forEach((n, i) => node(n, [...r.path, 'nodes', i]));
    for (const e of r.endpoints) node(e.node, [...e.path, 'node']);
    for (const key of Object.keys(r.nodeSelector ?? {}).sort()) {
      const problem = labelKeyProblem(key);
      if (problem) out.push(error([...r.path, 'nodeSelector', key], `nodeSelector key ${quote(key)} is not a Kubernetes label key: ${problem}; use a key such as apps.openyurt.io/nodepool (prefix at most 253, name at most 63 characters)`, true));
    }
    if (r.exposure !== 'LoadBalancer') continue;
    const reported = new Set<string>();
    for (const e of r.endpoints) {
      if (e.node.length <= LABEL_VALUE_MAX || reported.has(e.node)) continue;
      reported.add(e.node);
      out.push(error([...e.path, 'node'], `endpoint node name is ${e.node.length} characters, but region "${r.name}" is exposed by LoadBalancer and the controller labels the endpoint's Service ${EXPOSURE_NODE_LABEL}=<node>, a label value of at most ${LABEL_VALUE_MAX}; use a node with a shorter name as endpoint, or exposure: PublicIP`));
    }
  }
};

/**
 * Objects whose names are derived from regions and nodes must not share a name. The controller
 * makes a LoadBalancer Service per active endpoint, `raven-<type>-<region>-<node>` with "." turned
 * into "-": region "a-b" with node "c" and region "a" with node "b-c" would fight over one Service.
 */
const derivedNames: Check = (t, out, where) => {
  // Each region's candidates mount the Secret raven-proxy-<region>; the PSK must be another Secret.
  const psk = t.vpn.psk;
  const pskRegion = psk && t.l7Proxy && t.vpn.backend === 'ipsec' ? t.regions.find((r) => proxySecretName(r.name) === psk.name) : undefined;
  if (pskRegion) {
    out.push(error(['spec', 'vpn', 'psk', 'secretRef', 'name'], `the PSK Secret ${psk!.name} is also the L7 proxy certificate Secret of region "${pskRegion.name}" (${where([...pskRegion.path, 'name'])}), which its gateway candidates mount; name the PSK Secret something else, such as raven-ipsec-psk`));
  }
  const owner = new Map<string, { region: Region; endpoint: Endpoint }>();
  for (const r of inFileOrder(t).filter((x) => x.exposure === 'LoadBalancer')) {
    const reported = new Set<string>();
    for (const e of r.endpoints) {
      const name = exposureName(r.gatewayName, { type: e.type, nodeName: e.node });
      const prev = owner.get(name);
      if (!prev) {
        owner.set(name, { region: r, endpoint: e });
        continue;
      }
      // The same node listed twice is reported as a repeated endpoint.
      if (prev.region === r && prev.endpoint.node === e.node) continue;
      const key = e.path.join('.');
      if (reported.has(key)) continue;
      reported.add(key);
      const other = `endpoint "${prev.endpoint.node}" of region "${prev.region.name}" (${where([...prev.endpoint.path, 'node'])})`;
      out.push(error([...e.path, 'node'], `the LoadBalancer Service of endpoint "${e.node}" of region "${r.name}" would be named ${name}, the same as that of ${other}; rename the node or the region so the derived names differ`));
    }
  }
};

/** Bytes of the annotations other than member nodes and pod CIDRs we write on a Gateway (sync wave, ...). */
const OTHER_GATEWAY_ANNOTATION_BYTES = 1024;

/** A Gateway's annotations must fit Kubernetes' total annotation size; member nodes are listed in one. */
const annotationSizes: Check = (t, out) => {
  const joined = (xs: readonly string[]): number => xs.reduce((n, x) => n + Buffer.byteLength(x), 0) + Math.max(0, xs.length - 1);
  for (const r of t.regions) {
    const members = r.nodes.length ? MEMBER_NODES_ANNOTATION.length + joined(r.nodes) : 0;
    const pods = r.podCIDRs.length ? POD_CIDRS_ANNOTATION.length + joined(r.podCIDRs) : 0;
    const total = members + pods + OTHER_GATEWAY_ANNOTATION_BYTES;
    if (total > MAX_ANNOTATIONS_BYTES) {
      const what = members >= pods ? `a ${MEMBER_NODES_ANNOTATION} annotation of ${members} bytes (${r.nodes.length} nodes)` : `a ${POD_CIDRS_ANNOTATION} annotation of ${pods} bytes (${r.podCIDRs.length} ranges)`;
      const fix = members >= pods ? 'select the members with nodeSelector (a node-pool label) instead of listing them' : 'list fewer, larger pod ranges';
      out.push(error([...r.path, members >= pods ? 'nodes' : 'podCIDRs'], `the Gateway of region "${r.name}" would carry ${what}, which with its other annotations passes Kubernetes' ${MAX_ANNOTATIONS_BYTES} bytes of annotations per object; ${fix}`));
    }
  }
};

/** What a repository URL may carry: never a password, and for https no user either. */
const repository: Check = (t, out) => {
  // Argo CD refuses a path outside the repository; Flux would clamp it to the repository's root.
  if (t.gitops.path.split('/').some((seg) => seg === '..' || seg === '.')) {
    out.push(error(['spec', 'gitops', 'path'], `gitops.path ${quote(t.gitops.path)} has a "." or ".." segment; write the bundle's path from the repository root, such as dist/${t.cluster}`));
  }
  const path = ['spec', 'gitops', 'repoURL'];
  const url = t.gitops.repoURL;
  const fix = 'they would be committed to dist/ in the GitOps objects: remove them from the URL and give Flux gitops.flux.secretRef, or Argo CD repository credentials';
  if (url.startsWith('git@')) {
    // scp-like `git@host:path`: the user is part of the form; another "@" hides a password in the host.
    if (!/^git@[^@/:\s]+:[^@\s]+$/.test(url)) out.push(error(path, `repoURL ${redact(url)} is not an scp-like git@host:org/repo.git address (it has a second "@", or no ":path"); write git@host:org/repo.git, and keep credentials in Flux's gitops.flux.secretRef or Argo CD repository credentials`));
    return;
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    out.push(error(path, `repoURL ${redact(url)} is not a valid URL; write https://host/org/repo.git or ssh://git@host/org/repo.git`));
    return;
  }
  if (!parsed.hostname) {
    out.push(error(path, `repoURL ${redact(url)} has no host; write https://host/org/repo.git or ssh://git@host/org/repo.git`));
  } else if (parsed.password) {
    out.push(error(path, `repoURL ${redact(url)} carries a password; ${fix}`));
  } else if (parsed.protocol === 'https:' && parsed.username) {
    out.push(error(path, `repoURL ${redact(url)} carries credentials (a user or token before "@"); ${fix}`));
  }
};

/** The URL without whatever sits before "@" in its authority: a message must not repeat a token. */
function redact(url: string): string {
  if (!url.includes('://')) return quote(url.replace(/^.*@/, '***@'));
  return quote(url.replace(/^([a-z][-a-z0-9+.]*:\/\/)[^/]*@/i, '$1***@'));
}

const CHECKS: readonly Check[] = [
  uniqueRegionNames,
  nodeMembership,
  addressing,
  exposure,
  replicas,
  reachability,
  ports,
  vpn,
  kubernetesNames,
  derivedNames,
  annotationSizes,
  repository,
];
