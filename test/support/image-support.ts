/**
 * The container image for tests. ensureImage() gives the path of an OCI archive of the current
 * build/ (build-image/raven-<version>.oci.tar, ref name <version>), building it through
 * scripts/image.ts at most once per test process: when the archive is missing or older than
 * build/raven.js, the package list, package.json or the builder. A build with the base layer cached
 * (~/.cache/raven-image) takes a few seconds; a cold one runs mmdebstrap (30–60 s, a download).
 * unpackImage() turns an archive into an OCI runtime bundle (config.json + rootfs/) with umoci.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage, PACKAGES_FILE } from '../../scripts/image.ts';
import { unpackImage as unpackLabImage } from '../../src/lab/containers.ts';
import { ExecRunner } from '../../src/platform/command-runner.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** package.json's version: the archive's ref name (`oci-archive:<archive>:<version>`). */
export const IMAGE_REF = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
export const IMAGE_ARCHIVE = join(ROOT, 'build-image', `raven-${IMAGE_REF}.oci.tar`);

/** Why the image cannot be built and unpacked on this machine, or undefined when it can. */
export function imageUnavailable(): string | undefined {
  if (process.platform !== 'linux' || process.arch !== 'x64') return `the image is linux/amd64, this is ${process.platform}/${process.arch}`;
  if (process.getuid?.() !== 0) return 'needs root (mmdebstrap, umoci unpack, chroot)';
  for (const tool of ['mmdebstrap', 'umoci', 'skopeo']) {
    if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).error) return `needs ${tool} (apt-get install --no-install-recommends ${tool})`;
  }
  if (!existsSync(join(ROOT, 'build', 'raven.js'))) return 'needs build/ (npm run build)';
  return undefined;
}

let pending: Promise<string> | undefined;

/** Path of an up-to-date image archive; the first call of a process may build it. */
export function ensureImage(): Promise<string> {
  pending ??= ensure();
  return pending;
}

async function ensure(): Promise<string> {
  const entry = join(ROOT, 'build', 'raven.js');
  if (!existsSync(entry)) throw new Error('failed to build the image: build/raven.js is missing; run npm run build');
  const inputs = [entry, join(ROOT, PACKAGES_FILE), join(ROOT, 'scripts', 'image.ts'), join(ROOT, 'package.json')];
  if (existsSync(IMAGE_ARCHIVE)) {
    const built = statSync(IMAGE_ARCHIVE).mtimeMs;
    if (inputs.every((f) => statSync(f).mtimeMs <= built)) return IMAGE_ARCHIVE;
  }
  await buildImage({ out: IMAGE_ARCHIVE, log: (line) => process.stderr.write(`  ${line}\n`) });
  return IMAGE_ARCHIVE;
}

export interface Bundle {
  /** The OCI bundle folder: config.json (umoci's, from the image config) and rootfs/. */
  readonly dir: string;
  readonly rootfs: string;
  readonly config: {
    readonly process: {
      readonly args: string[];
      readonly env: string[];
      readonly cwd: string;
      readonly user: { readonly uid: number; readonly gid: number };
    };
  };
}

/** Unpacks `archive` (ref `ref`) into `<dir>/layout` and the bundle `<dir>/bundle` (root only). */
export async function unpackImage(archive: string, dir: string, ref = IMAGE_REF): Promise<Bundle> {
  // The lab's own unpacking (the one `raven lab up --image` runs), then umoci's config.json beside it.
  const image = await unpackLabImage(archive, dir, new ExecRunner());
  if (image.ref !== ref) throw new Error(`${archive} holds ref ${image.ref}, not ${ref}`);
  const bundle = join(dir, 'bundle');
  const config = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as Bundle['config'];
  return { dir: bundle, rootfs: join(bundle, 'rootfs'), config };
}
