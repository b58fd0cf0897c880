/**
 * WAN latency for `raven lab`. The kernel here has no netem, so each WAN link with a delay is a
 * pair of TAP devices joined by a small process of ours (`native/wan-delay.c`, compiled once per
 * lab with the machine's C compiler) instead of a veth pair: one TAP stays in the switch as the
 * uplink port, the other moves into the host's namespace as its wan0. Addresses, routes, NAT, and
 * `fail --what wan` (the port set down) work on them as on veths.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type CommandRunner, mustRun } from '../platform/command-runner.js';
import { isAlive } from '../platform/owned-process.js';
import type { LabState } from './state.js';

/** A WAN link made of a delay line: `port` in the switch, wan0 of `hostNetns`. */
export interface DelayLine {
  readonly port: string;
  readonly hostNetns: string;
  readonly oneWayMs: number;
}

/** The TAP's name in the switch until it moves into the host (as wan0). */
export function hostTapName(port: string): string {
  return `t${port}`;
}

function sourceFile(): string {
  const fromSources = import.meta.url.endsWith('.ts');
  return fileURLToPath(fromSources ? new URL('./native/wan-delay.c', import.meta.url) : new URL('../src/lab/native/wan-delay.c', import.meta.url));
}

/** Compiles the delay line into the lab's directory (once per lab); its path. */
export async function buildDelayLine(state: LabState, runner: CommandRunner): Promise<string> {
  const dir = join(state.dir, 'bin');
  const binary = join(dir, 'raven-wan-delay');
  if (existsSync(binary)) return binary;
  mkdirSync(dir, { recursive: true });
  const found = await runner.run('cc', ['--version']).catch(() => ({ code: 127 }));
  if (found.code !== 0) throw new Error('WAN delay needs a C compiler (cc) to build the lab\'s delay line: install gcc, or run raven lab up --wan-delay 0');
  await mustRun(runner, 'cc', ['-O2', '-Wall', '-o', binary, sourceFile()]);
  return binary;
}

/**
 * Starts a delay line in the switch namespace and moves its host end into the host namespace as
 * wan0. Resolves once both TAPs exist; the process is recorded as `wan-delay-<port>`.
 */
export async function startDelayLine(state: LabState, binary: string, switchNetns: string, line: DelayLine, runner: CommandRunner): Promise<number> {
  const out = openSync(state.log(`wan-delay-${line.port}`), 'a');
  const child = spawn('ip', ['netns', 'exec', switchNetns, binary, hostTapName(line.port), line.port, String(line.oneWayMs)], {
    detached: true,
    stdio: ['ignore', 'pipe', out],
    env: { ...process.env, RAVEN_LAB_DIR: state.dir },
  });
  child.unref();
  state.writePid(`wan-delay-${line.port}`, child.pid!);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the WAN delay line for ${line.port} did not start within 5 s (see ${state.log(`wan-delay-${line.port}`)})`)), 5000);
    child.stdout!.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the WAN delay line for ${line.port} exited (${code}) before it was ready (see ${state.log(`wan-delay-${line.port}`)})`));
    });
  });
  child.stdout!.destroy();
  if (!isAlive(child.pid!)) throw new Error(`the WAN delay line for ${line.port} is not running`);
  await mustRun(runner, 'ip', ['-n', switchNetns, 'link', 'set', hostTapName(line.port), 'netns', line.hostNetns, 'name', 'wan0']);
  return child.pid!;
}
