/**
 * `raven` command line. Exit codes: 0 success; 1 invalid input or failure; 2 usage error.
 */
import { parseArgs } from 'node:util';
import { compile } from './compile.js';
import { readSources } from './io/files.js';
import { type Diagnostic, formatDiagnostic, hasErrors } from './topology/diagnostics.js';
import { validateSources } from './compile.js';

const USAGE = `usage:
  raven validate FILE...             check topology files; errors go to stderr as file:line:col
  raven synth FILE... --out DIR      compile topology files into DIR (replaced atomically)

FILE may be a directory: its *.yaml files are used.
exit codes: 0 ok, 1 invalid input, 2 usage error`;

export interface Io {
  readonly stdout: (s: string) => void;
  readonly stderr: (s: string) => void;
}

class UsageError extends Error {}

export async function main(argv: readonly string[], io: Io): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'validate':
        return validate(rest, io);
      case 'synth':
        return await synth(rest, io);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.stdout(USAGE + '\n');
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr(`raven: ${(err as Error).message}\n${USAGE}\n`);
      return 2;
    }
    io.stderr(`raven: ${(err as Error).message}\n`);
    return 1;
  }
}

function files(args: readonly string[], options: Record<string, { type: 'string' }> = {}): { positionals: string[]; values: Record<string, string | undefined> } {
  const { positionals, values } = parseArgs({ args: [...args], options, allowPositionals: true, strict: true });
  if (positionals.length === 0) throw new UsageError('no topology files given');
  return { positionals, values: values as Record<string, string | undefined> };
}

function report(diagnostics: readonly Diagnostic[], io: Io): void {
  for (const d of diagnostics) io.stderr(formatDiagnostic(d) + '\n');
}

function validate(args: readonly string[], io: Io): number {
  const { positionals } = files(args);
  const read = readSources(positionals);
  const { topologies, diagnostics } = validateSources(read.sources);
  const all = [...read.diagnostics, ...diagnostics];
  report(all, io);
  if (hasErrors(all)) {
    const n = all.filter((d) => d.severity === 'error').length;
    io.stderr(`${n} error${n === 1 ? '' : 's'}\n`);
    return 1;
  }
  for (const t of topologies) io.stdout(`${t.source}: ok (cluster ${t.cluster}, ${t.regions.length} region${t.regions.length === 1 ? "" : "s"})\n`);
  return 0;
}

async function synth(args: readonly string[], io: Io): Promise<number> {
  const { positionals, values } = files(args, { out: { type: 'string' } });
  if (!values.out) throw new UsageError('synth needs --out DIR');
  const read = readSources(positionals);
  const result = compile(read.sources);
  const all = [...read.diagnostics, ...result.diagnostics];
  report(all, io);
  if (hasErrors(all) || !result.files) {
    io.stderr(`nothing written to ${values.out}\n`);
    return 1;
  }
  const { writeTree } = await import('./io/files.js');
  writeTree(values.out, result.files);
  io.stdout(`wrote ${result.files.size} files for ${result.topologies.map((t) => t.cluster).join(', ')} to ${values.out}\n`);
  return 0;
}
