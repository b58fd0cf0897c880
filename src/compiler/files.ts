/**
 * The compiler's only file-system code: reading topology sources and replacing the output tree
 * atomically, so invalid input or a crash never leaves a half-written dist/.
 */
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, normalize, relative, sep } from 'node:path';
import { type SourceFile, totalInputProblem } from './compile.js';
import { GENERATED_MARKER, type FileTree } from './bundle.js';
import { type Diagnostic, printable } from '../topology/diagnostics.js';
import { MAX_TOTAL_INPUT_BYTES } from '../topology/limits.js';
import { MAX_FILE_BYTES } from '../topology/source.js';

const TOPOLOGY_FILE = /\.ya?ml$/;

export interface ReadResult {
  readonly sources: SourceFile[];
  readonly diagnostics: Diagnostic[];
  /**
   * The files given total more than the input limit: nothing was kept (compiling a part would
   * mislead), and `diagnostics` says where the limit was passed.
   */
  readonly overLimit?: true;
}

/**
 * Reads files (a directory means its *.yaml files). Unreadable ones become diagnostics. Reading
 * stops at the first file with which the total passes `maxTotalBytes`.
 */
export function readSources(paths: readonly string[], maxTotalBytes: number = MAX_TOTAL_INPUT_BYTES): ReadResult {
  const sources: SourceFile[] = [];
  const diagnostics: Diagnostic[] = [];
  let total = 0;
  let over: Diagnostic | undefined;
  const fail = (file: string, message: string): void => {
    diagnostics.push({ file, line: 1, col: 1, severity: 'error', path: '', message });
  };
  for (const p of paths) {
    if (over) break;
    let stat;
    try {
      stat = statSync(p);
    } catch (err) {
      fail(p, `cannot read file: ${reason(err)}`);
      continue;
    }
    if (stat.isDirectory()) {
      const entries = readdirSync(p).filter((f) => TOPOLOGY_FILE.test(f)).sort();
      if (entries.length === 0) fail(p, 'directory holds no .yaml topology files');
      for (const f of entries) if (!over) readOne(join(p, f));
      continue;
    }
    readOne(p);
  }
  if (over) return { sources: [], diagnostics: [...diagnostics, over], overLimit: true };
  return { sources, diagnostics };

  /** Counts `bytes` of `file` towards the total; false once the total passes the limit. */
  function admit(file: string, bytes: number): boolean {
    total += bytes;
    over = totalInputProblem(file, total, maxTotalBytes);
    return over === undefined;
  }

  function readOne(given: string): void {
    const file = displayPath(given);
    try {
      const st = statSync(file);
      // FIFOs block forever and devices report size 0 while being endless: only regular files.
      if (!st.isFile()) {
        fail(file, st.isDirectory() ? 'cannot read file: is a directory' : 'cannot read file: not a regular file (a FIFO, socket or device); give a topology .yaml file');
        return;
      }
      const size = st.size;
      // Read at most one byte past the limit: a huge file is reported, not loaded.
      // Counted before reading: a file that would pass the total is not loaded.
      if (size > MAX_FILE_BYTES) {
        if (admit(file, MAX_FILE_BYTES + 1)) sources.push({ path: file, bytes: readPrefix(file, MAX_FILE_BYTES + 1) });
        return;
      }
      if (admit(file, size)) sources.push({ path: file, bytes: readFileSync(file) });
    } catch (err) {
      fail(file, `cannot read file: ${reason(err)}`);
    }
  }
}

/** Paths inside the working directory are shown relative and with `/`, however they were typed. */
function displayPath(p: string): string {
  const rel = relative(process.cwd(), p);
  const shown = rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : normalize(p);
  return shown.split(sep).join('/');
}

function readPrefix(file: string, n: number): Uint8Array {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(n);
    const got = readSync(fd, buf, 0, n, 0);
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

function reason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  switch (e.code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory';
    default:
      return e.message ?? String(err);
  }
}

/** Temp trees are `.<out>.raven-tmp-<pid>` (the new tree) and `.<out>.raven-old-<pid>` (the one replaced). */
const TEMP_KINDS = ['tmp', 'old'] as const;
function tempTree(outDir: string, kind: (typeof TEMP_KINDS)[number], pid: number): string {
  return join(dirname(outDir), `.${basename(outDir)}.raven-${kind}-${pid}`);
}

/**
 * A temp tree left by an earlier run is removed when the run's process is gone, or when it is older
 * than this (its PID may have been reused since).
 */
export const STALE_TEMP_TREE_MS = 24 * 60 * 60 * 1000;

/** Signals that end a synth: the write finishes (or is undone) first, then the signal takes effect. */
const DEFERRED_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * Replaces `outDir` with exactly `files`. Refuses when `outDir` holds anything raven did not
 * generate, so `--out .` or a typo never deletes someone's work. The new tree is written next to
 * the old one and swapped in with renames. Temp trees of earlier runs that died are removed first;
 * SIGINT, SIGTERM and SIGHUP wait until this run's temp trees are gone, then end the process.
 */
export function writeTree(outDir: string, files: FileTree, now: number = Date.now()): void {
  if (existsSync(outDir)) {
    const foreign = findForeignFile(outDir);
    if (foreign) {
      throw new Error(`refusing to replace ${printable(outDir)}: ${printable(foreign)} was not generated by raven-gitops; choose an empty or generated output directory`);
    }
  }
  const parent = dirname(outDir);
  mkdirSync(parent, { recursive: true });
  removeStaleTempTrees(outDir, now);
  const tmp = tempTree(outDir, 'tmp', process.pid);
  const old = tempTree(outDir, 'old', process.pid);
  const release = deferSignals();
  try {
    rmSync(tmp, { recursive: true, force: true });
    for (const [rel, content] of files) {
      const target = join(tmp, rel);
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, content);
    }
    if (files.size === 0) mkdirSync(tmp, { recursive: true });
    if (existsSync(outDir)) renameSync(outDir, old);
    renameSync(tmp, outDir);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(old, { recursive: true, force: true });
    release();
  }
}

/** Removes `.<out>.raven-(tmp|old)-<pid>` directories whose process is gone or that are stale. */
export function removeStaleTempTrees(outDir: string, now: number = Date.now()): string[] {
  const parent = dirname(outDir);
  const prefix = `.${basename(outDir)}.raven-`;
  const removed: string[] = [];
  let entries;
  try {
    entries = readdirSync(parent, { withFileTypes: true });
  } catch {
    return removed;
  }
  for (const entry of entries) {
    if (!entry.name.startsWith(prefix) || !entry.isDirectory()) continue;
    const m = /^(tmp|old)-([1-9]\d{0,9})$/.exec(entry.name.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[2]);
    const path = join(parent, entry.name);
    const stale = pid === process.pid || !processExists(pid) || now - lstatSync(path).mtimeMs > STALE_TEMP_TREE_MS;
    if (!stale) continue;
    rmSync(path, { recursive: true, force: true });
    removed.push(path);
  }
  return removed;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, as another user's process.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * While the tree is written (synchronously), a signal must not kill the process between a write and
 * the clean-up. With a listener installed, Node delivers the signal once the write has returned; the
 * listener then re-raises it with the default action, so the process still ends as signalled.
 */
function deferSignals(): () => void {
  const onSignal = (signal: NodeJS.Signals): void => {
    remove();
    process.kill(process.pid, signal);
  };
  const remove = (): void => {
    for (const s of DEFERRED_SIGNALS) process.off(s, onSignal);
  };
  for (const s of DEFERRED_SIGNALS) process.on(s, onSignal);
  // A signal that arrived during the write is delivered in a poll phase of the event loop. The first
  // setImmediate may still run before the next poll; the second runs after it, and until then the
  // pending immediates keep the process alive.
  return () => void setImmediate(() => setImmediate(remove));
}

function findForeignFile(dir: string): string | undefined {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) {
      const f = findForeignFile(p);
      if (f) return f;
    } else if (!entry.isFile() || !startsWithMarker(p)) {
      return p;
    }
  }
  return undefined;
}

function startsWithMarker(file: string): boolean {
  return Buffer.from(readPrefix(file, GENERATED_MARKER.length)).toString("utf8") === GENERATED_MARKER;
}
