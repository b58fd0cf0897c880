/**
 * Throwaway network namespaces for real-kernel tests. Every name starts with `rgt-` plus the test
 * process id, so parallel runs never collide and cleanup only ever touches what this run made.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { CHARON_CANDIDATES } from '../../src/agent/dataplane/ipsec.ts';
import type { CommandResult, CommandRunner } from '../../src/platform/command-runner.ts';
import { ExecRunner } from '../../src/platform/command-runner.ts';

export const PREFIX = `rgt-${process.pid}`;

export function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** wireguard-tools and wireguard-go are installed (this kernel has no WireGuard module). */
export function haveWireGuard(): boolean {
  return spawnSync('wg', ['--version']).status === 0 && spawnSync('which', ['wireguard-go']).status === 0;
}

/** strongSwan's charon (with kernel-libipsec) and swanctl are installed. */
export function haveStrongswan(): boolean {
  return spawnSync('swanctl', ['--help']).status === 0 && CHARON_CANDIDATES.some((p) => existsSync(p));
}

/** Whether this machine lets us create network namespaces (root with CAP_NET_ADMIN). */
export function canUseNetns(): boolean {
  const probe = `${PREFIX}-probe`;
  const ok = spawnSync('ip', ['netns', 'add', probe]).status === 0;
  if (ok) spawnSync('ip', ['netns', 'del', probe]);
  return ok;
}

/** Two namespaces joined by a veth: `a` (192.168.77.1, fd77::1) and `b` (.2, fd77::2). */
export function pair(tag: string): { a: string; b: string; devA: string; cleanup(): void } {
  const a = `${PREFIX}-${tag}-a`;
  const b = `${PREFIX}-${tag}-b`;
  const devA = `rgt${process.pid % 100000}${tag}`.slice(0, 15);
  sh('ip', ['netns', 'add', a]);
  sh('ip', ['netns', 'add', b]);
  sh('ip', ['-n', a, 'link', 'add', devA, 'type', 'veth', 'peer', 'name', 'peer0', 'netns', b]);
  sh('ip', ['-n', a, 'addr', 'add', '192.168.77.1/24', 'dev', devA]);
  sh('ip', ['-n', a, 'addr', 'add', 'fd77::1/64', 'dev', devA, 'nodad']);
  sh('ip', ['-n', b, 'addr', 'add', '192.168.77.2/24', 'dev', 'peer0']);
  sh('ip', ['-n', b, 'addr', 'add', 'fd77::2/64', 'dev', 'peer0', 'nodad']);
  for (const [ns, dev] of [[a, devA], [b, 'peer0']] as const) {
    sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  return {
    a,
    b,
    devA,
    cleanup: () => {
      spawnSync('ip', ['netns', 'del', a]);
      spawnSync('ip', ['netns', 'del', b]);
    },
  };
}

/** Our namespaces still present (should be none after cleanup). */
export function leftovers(): string[] {
  return sh('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(PREFIX));
}

/** The real runner, recording every command and its stdin as text. */
export class RecordingRunner implements CommandRunner {
  readonly log: string[] = [];
  private readonly real = new ExecRunner();
  run(cmd: string, args: readonly string[], input?: string): Promise<CommandResult> {
    this.log.push([cmd, ...args].join(' ') + (input ? `\n${input.trimEnd()}` : ''));
    return this.real.run(cmd, args, input);
  }
  writes(): string[] {
    return this.log.filter((l) => / -batch | rule add | rule del | flush /.test(l));
  }
}

/**
 * Runs a command without blocking the event loop (tests that host servers in-process must keep
 * serving), collecting stdout and stderr together.
 */
export function run(cmd: string, args: readonly string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (c) => resolve({ code: c ?? -1, out }));
  });
}
