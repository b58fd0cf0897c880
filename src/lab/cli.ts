/** `raven lab ...` subcommands other than `apiserver`: argument parsing and exit codes only. */
import { basename, dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { failures, formatCheck } from './check.js';
import { type Io, labCheck, labDown, labFail, labRestore, labUp, resolveLab } from './lab.js';
import { DEFAULT_RUN_DIR, LabState } from './state.js';

export const LAB_USAGE = `usage: (up, fail, restore and down need root)
  raven lab up TOPOLOGY [--name N] [--nodes-per-region 2] [--symmetric-nat] [--wan-loss PCT]
                        [--same-edge-lan] [--wait 90s | --no-wait] [--image ARCHIVE]
                                     build the topology's cluster on this machine and wait until
                                     every pair that should connect does; with --image, run the
                                     controller and agents from that OCI archive (npm run image)
                                     with runc, as the compiled manifests say
  raven lab check [NAME] [--verbose] [--count 3]
                                     ping every pod pair and node pair; exit 1 if any that should
                                     connect does not
  raven lab fail NODE [--name N]     hard-kill a node: its agent and tunnel, its links
  raven lab restore NODE [--name N]  bring it back
  raven lab down [NAME]              remove everything of the lab (also after a crash)
  --run-dir DIR                      where labs keep their state (default ${DEFAULT_RUN_DIR})`;

export class LabUsageError extends Error {}

export async function labCommand(sub: string, args: readonly string[], io: Io): Promise<number> {
  const { positionals, values } = parseArgs({
    args: [...args],
    allowPositionals: true,
    strict: true,
    options: {
      name: { type: 'string' },
      'run-dir': { type: 'string' },
      'state-dir': { type: 'string' },
      'nodes-per-region': { type: 'string' },
      'symmetric-nat': { type: 'boolean' },
      'wan-loss': { type: 'string' },
      'same-edge-lan': { type: 'boolean' },
      wait: { type: 'string' },
      'no-wait': { type: 'boolean' },
      verbose: { type: 'boolean' },
      count: { type: 'string' },
      image: { type: 'string' },
    },
  });
  const runDir = values['run-dir'] ?? DEFAULT_RUN_DIR;
  const one = (what: string): string => {
    if (positionals.length !== 1) throw new LabUsageError(`lab ${sub} needs ${what}`);
    return positionals[0]!;
  };
  const number = (flag: string, raw: string | undefined, fallback: number, min: number, max: number): number => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) throw new LabUsageError(`--${flag} must be a number from ${min} to ${max}, not "${raw}"`);
    return n;
  };
  switch (sub) {
    case 'up': {
      const waitS = values['no-wait'] ? 0 : number('wait', values.wait?.replace(/s$/, ''), 90, 1, 3600);
      const { state } = await labUp(
        {
          file: one('a topology file'),
          ...(values.name && { name: values.name }),
          runDir,
          nodesPerRegion: number('nodes-per-region', values['nodes-per-region'], 2, 1, 200),
          symmetricNAT: values['symmetric-nat'] ?? false,
          wanLossPercent: number('wan-loss', values['wan-loss'], 0, 0, 100),
          sameEdgeLAN: values['same-edge-lan'] ?? false,
          waitMs: waitS * 1000,
          ...(values.image && { image: values.image }),
        },
        io,
      );
      io.stdout(`kubeconfig: ${state.kubeconfig}\nnext: raven lab check ${state.name}${runDir === DEFAULT_RUN_DIR ? '' : ` --run-dir ${runDir}`}\n`);
      return 0;
    }
    case 'check': {
      const state = resolveLab(positionals[0] ?? values.name, runDir);
      const results = await labCheck(state, { count: number('count', values.count, 3, 1, 100) });
      io.stdout(formatCheck(results, values.verbose ?? false));
      return failures(results).length ? 1 : 0;
    }
    case 'fail':
    case 'restore': {
      const node = one('a node name');
      const state = resolveLab(values.name, runDir);
      await (sub === 'fail' ? labFail(state, node) : labRestore(state, node));
      io.stdout(`lab ${state.name}: node ${node} ${sub === 'fail' ? 'failed (agent and tunnel killed, links down)' : 'restored'}\n`);
      return 0;
    }
    case 'down': {
      const state = resolveLab(positionals[0] ?? values.name, runDir);
      await labDown({ name: state.name, runDir }, io);
      return 0;
    }
    case 'serve': {
      // Internal: the control plane process `lab up` starts.
      if (!values['state-dir']) throw new LabUsageError('lab serve needs --state-dir');
      const dir = values['state-dir'];
      const { serveLab } = await import('./supervisor.js');
      await serveLab(new LabState(dirname(dir), basename(dir)));
      return 0;
    }
    default:
      throw new LabUsageError(`unknown lab subcommand "${sub}"`);
  }
}
