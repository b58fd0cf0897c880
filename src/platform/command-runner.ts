/**
 * Every command the agent runs goes through this narrow interface: argument arrays only (never a
 * shell string), optional stdin. Tests inject a runner that records what would run.
 */
import { spawn } from 'node:child_process';

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface CommandRunner {
  run(cmd: string, args: readonly string[], input?: string): Promise<CommandResult>;
}

export class ExecRunner implements CommandRunner {
  run(cmd: string, args: readonly string[], input?: string): Promise<CommandResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(cmd, [...args], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('error', (err) => reject(new Error(`failed to run ${cmd}: ${err.message}`, { cause: err })));
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
      // A command may exit without reading its input (e.g. after a usage error): EPIPE is not our failure.
      child.stdin.on('error', () => undefined);
      child.stdin.end(input ?? '');
    });
  }
}

/** Runs a command and throws, with its stderr, unless it exits 0. */
export async function mustRun(runner: CommandRunner, cmd: string, args: readonly string[], input?: string): Promise<string> {
  const r = await runner.run(cmd, args, input);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}
