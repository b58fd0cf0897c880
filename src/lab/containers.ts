/**
 * The lab's container runtime, for `raven lab up --image`: an OCI archive unpacked once (umoci),
 * and one `runc` container per pod, each with its own runc state under the lab's directory so only
 * the lab's containers are ever listed, killed or deleted.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CommandRunner } from '../platform/command-runner.js';
import { mustRun } from '../platform/command-runner.js';
import { isObject } from '../platform/canonical.js';
import type { ImageConfig, OciSpec } from './oci-spec.js';

export interface UnpackedImage {
  readonly rootfs: string;
  readonly config: ImageConfig;
  /** The manifest's digest (`sha256:...`): which image the lab runs. */
  readonly digest: string;
  readonly ref: string;
}

const REF_ANNOTATION = 'org.opencontainers.image.ref.name';
const DIGEST = /^sha256:[0-9a-f]{64}$/;

/** Unpacks `archive` (an OCI archive, e.g. from `npm run image`) under `dir`: `dir/layout`, `dir/bundle/rootfs`. */
export async function unpackImage(archive: string, dir: string, runner: CommandRunner): Promise<UnpackedImage> {
  if (!existsSync(archive)) throw new Error(`image archive ${archive} does not exist (build one with npm run image)`);
  const layout = join(dir, 'layout');
  mkdirSync(layout, { recursive: true });
  await mustRun(runner, 'tar', ['-xf', archive, '-C', layout]);
  const { ref, digest, config } = readLayout(layout, archive);
  await mustRun(runner, 'umoci', ['unpack', '--image', `${layout}:${ref}`, join(dir, 'bundle')]);
  return { rootfs: join(dir, 'bundle', 'rootfs'), config, digest, ref };
}

/** The one image of an OCI layout: its ref name, manifest digest and runtime config, checked field by field. */
export function readLayout(layout: string, what: string): { ref: string; digest: string; config: ImageConfig } {
  const json = (file: string): unknown => {
    try {
      return JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new Error(`${what}: ${file} is not readable JSON`, { cause: err });
    }
  };
  const blob = (digest: unknown): unknown => {
    if (typeof digest !== 'string' || !DIGEST.test(digest)) throw new Error(`${what}: a blob digest "${String(digest)}" is not sha256:<64 hex>`);
    return json(join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length)));
  };
  const index = json(join(layout, 'index.json'));
  const manifests = isObject(index) && Array.isArray(index.manifests) ? index.manifests : [];
  if (manifests.length !== 1 || !isObject(manifests[0])) throw new Error(`${what}: expected exactly one image in index.json, found ${manifests.length}`);
  const entry = manifests[0];
  const ref = isObject(entry.annotations) ? entry.annotations[REF_ANNOTATION] : undefined;
  if (typeof ref !== 'string' || !/^[A-Za-z0-9._-]{1,128}$/.test(ref)) throw new Error(`${what}: the image has no ${REF_ANNOTATION} annotation (a tag)`);
  const manifest = blob(entry.digest);
  const configDigest = isObject(manifest) && isObject(manifest.config) ? manifest.config.digest : undefined;
  const image = blob(configDigest);
  const c = isObject(image) && isObject(image.config) ? image.config : {};
  const strings = (v: unknown, field: string): string[] => {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`${what}: image config ${field} is not a list of strings`);
    return v;
  };
  const str = (v: unknown, field: string): string => {
    if (v === undefined) return '';
    if (typeof v !== 'string') throw new Error(`${what}: image config ${field} is not a string`);
    return v;
  };
  return {
    ref,
    digest: entry.digest as string,
    config: { entrypoint: strings(c.Entrypoint, 'Entrypoint'), cmd: strings(c.Cmd, 'Cmd'), env: strings(c.Env, 'Env'), user: str(c.User, 'User'), workingDir: str(c.WorkingDir, 'WorkingDir') },
  };
}

/** The last error runc logged (its JSON log lines: {"level","msg"}). */
function lastError(log: string): string {
  const lines = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : [];
  for (const line of lines.reverse()) {
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if (entry.level === 'error' && entry.msg) return entry.msg;
    } catch {
      // not a JSON line
    }
  }
  return `exit without an error message (${log})`;
}

/** runc, scoped to one state directory (`--root`): the lab's containers and no others. */
export class Runc {
  constructor(
    private readonly root: string,
    private readonly runner: CommandRunner,
  ) {}

  /**
   * Writes the bundle (`config.json`) and starts the container detached, its output appended to
   * `logFile`. Returns the host PID of its first process. An earlier, stopped container of the same
   * id is deleted first (a node restored after `lab fail`).
   */
  async run(id: string, bundle: string, spec: OciSpec, logFile: string): Promise<number> {
    await this.delete(id);
    mkdirSync(bundle, { recursive: true });
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec, null, 1) + '\n');
    const pidFile = join(bundle, 'init.pid');
    const runcLog = join(bundle, 'runc.log');
    const out = openSync(logFile, 'a');
    const code = await new Promise<number>((resolve, reject) => {
      // The container inherits runc's stdio (the pod's log); runc's own errors go to runc.log.
      const child = spawn('runc', ['--root', this.root, '--log', runcLog, '--log-format', 'json', 'run', '--detach', '--bundle', bundle, '--pid-file', pidFile, id], { stdio: ['ignore', out, out] });
      child.once('error', reject);
      child.once('exit', (c) => resolve(c ?? 1));
    });
    if (code !== 0) throw new Error(`runc could not start container ${id}: ${lastError(runcLog)}`);
    return Number(readFileSync(pidFile, 'utf8'));
  }

  /** Ids of the containers in this runc root. */
  async list(): Promise<string[]> {
    if (!existsSync(this.root)) return [];
    const out = await mustRun(this.runner, 'runc', ['--root', this.root, 'list', '--quiet']);
    return out.split('\n').filter(Boolean).sort();
  }

  /** Removes the container (killing what is left of it) and its cgroups; nothing if it does not exist. */
  async delete(id: string): Promise<void> {
    if (!(await this.list()).includes(id)) return;
    await mustRun(this.runner, 'runc', ['--root', this.root, 'delete', '--force', id]);
  }
}
