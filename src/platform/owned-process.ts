/**
 * Stopping daemons we started (wireguard-go, charon) by their recorded PID only. `isOurs` guards
 * against PID reuse: it must check /proc/<pid> still shows the process we started.
 */
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
