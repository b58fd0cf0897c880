/**
 * Daemons we started (wireguard-go, charon): stopped by their recorded PID only, and watched so
 * that one that dies is noticed at once. `isOurs` guards against PID reuse: it must check
 * /proc/<pid> still shows the process we started.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** Alive and not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** SIGTERM, wait up to `graceMs` while it is still ours, then SIGKILL and wait briefly for it to go. */
export async function stopOwnedProcess(pid: number, isOurs: () => boolean, graceMs: number): Promise<void> {
  if (!isOurs()) return;
  signal(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (isOurs() && Date.now() < deadline) await sleep(20);
  if (!isOurs()) return;
  signal(pid, 'SIGKILL');
  const killDeadline = Date.now() + 1000;
  while (isAlive(pid) && Date.now() < killDeadline) await sleep(10);
}

/** How a watched process ended. A process we did not start (adopted) leaves no status: only `pid`. */
export interface ProcessExit {
  readonly pid: number;
  readonly code?: number;
  readonly signal?: NodeJS.Signals;
}

/** "exited with code 1", "killed by SIGKILL", or "is gone" (an adopted process: no status to read). */
export function describeExit(e: ProcessExit): string {
  if (e.signal) return `killed by ${e.signal}`;
  if (e.code !== undefined) return `exited with code ${e.code}`;
  return 'is gone';
}

/** How often an adopted process (not our child, so no exit event) is looked for in /proc. */
export const EXIT_POLL_MS = 200;

export interface ExitWatch {
  readonly pid: number;
  /** No callback after this: call it before stopping the process on purpose. */
  stop(): void;
}

/**
 * Calls `onExit` once when the process ends. A child we spawned reports it through its `exit`
 * event (the kernel tells Node at once, detached and unref'd children too); a process we adopted
 * (started by an earlier agent) is checked with `isOurs` every `pollMs`, on a timer that keeps no
 * process alive. Node has no pidfd, and polling /proc for one PID costs one small read.
 */
export function watchExit(target: { readonly child: ChildProcess } | { readonly pid: number; readonly isOurs: () => boolean }, onExit: (e: ProcessExit) => void, pollMs = EXIT_POLL_MS): ExitWatch {
  let active = true;
  const fire = (e: ProcessExit): void => {
    if (!active) return;
    active = false;
    onExit(e);
  };
  if ('child' in target) {
    const { child } = target;
    const pid = child.pid ?? 0;
    const exited = (code: number | null, sig: NodeJS.Signals | null): void => fire({ pid, ...(code !== null && { code }), ...(sig !== null && { signal: sig }) });
    child.on('error', () => undefined);
    // It may have ended before we looked (a start that took a while to confirm).
    if (child.exitCode !== null || child.signalCode !== null) queueMicrotask(() => exited(child.exitCode, child.signalCode));
    else child.once('exit', exited);
    return { pid, stop: () => void (active = false) };
  }
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    timer = setTimeout(() => {
      if (!active) return;
      if (target.isOurs()) arm();
      else fire({ pid: target.pid });
    }, pollMs);
    timer.unref();
  };
  arm();
  return {
    pid: target.pid,
    stop: () => {
      active = false;
      if (timer) clearTimeout(timer);
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
