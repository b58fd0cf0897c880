/** `raven lab ...` subcommands other than `apiserver`: argument parsing and exit codes only. */
import { basename, dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { failures, formatCheck } from './check.js';
import { type Io, labCheck, labDown, labFail, labFailApi, labFailWanLoss, labRestore, labRestoreApi, labRestoreWanLoss, labUp, resolveLab, resumeApiWhenDue } from './lab.js';
import { DEFAULT_WAN_DELAY_MS, MAX_WAN_DELAY_MS } from './layout.js';
import { DEFAULT_RUN_DIR, LabState, NODE_FAULTS, type NodeFault } from './state.js';

export const LAB_USAGE = `usage: (up, fail, restore and down need root)
  raven lab up TOPOLOGY [--name N] [--nodes-per-region 2] [--symmetric-nat] [--wan-loss PCT]
                        [--wan-delay MS | --wan-delay REGION=MS ...] [--same-edge-lan]
                        [--wait 90s | --no-wait] [--image ARCHIVE]
                                     build the topology's cluster on this machine and wait until
                                     every pair that should connect does; with --image, run the
                                     controller and agents from that OCI archive (npm run image)
                                     with runc, as the compiled manifests say. --wan-delay: one-way
                                     delay of each region's uplink (default ${DEFAULT_WAN_DELAY_MS} ms: regions are
                                     ${4 * DEFAULT_WAN_DELAY_MS} ms apart; 0 = none), for all or per region
  raven lab check [NAME] [--verbose] [--count 3]
                                     ping every pod pair and node pair; exit 1 if any that should
                                     connect does not
  raven lab fail NODE [--what node|agent|tunnel|wan|udp-block] [--name N]
                                     break one thing of a node: node (default) = power cut (agent
                                     and tunnel SIGKILLed, ports down); agent = the agent process;
                                     tunnel = its wireguard-go or charon (SIGKILL); wan = its uplink
                                     (behind NAT: its region's router's); udp-block = nftables drops
                                     UDP to and from the tunnel port
  raven lab fail --api DURATION [--name N]
                                     pause the lab's API server (SIGSTOP) for DURATION (1500ms, 20s,
                                     2m; 1 s to 1 h), then resume it
  raven lab fail --wan-loss REGION=PCT [--name N]
                                     drop PCT % (1-100) of the region's WAN packets each way (its NAT
                                     router's uplink, or each public host's), until restore
  raven lab restore NODE [--what ...] | --api | --wan-loss REGION [--name N]
                                     undo exactly what fail did (without --what: the node's only fault)
  raven lab down [NAME]              remove everything of the lab (also after a crash)
  --run-dir DIR                      where labs keep their state (default ${DEFAULT_RUN_DIR})`;

export class LabUsageError extends Error {}

/** `--wan-delay MS` (every region) and `--wan-delay REGION=MS` (one region), as lab options. */
function wanDelays(flags: readonly string[], number: (flag: string, raw: string, fallback: number, min: number, max: number) => number): { wanDelayMs?: number; regionWanDelayMs?: Record<string, number> } {
  const out: { wanDelayMs?: number; regionWanDelayMs?: Record<string, number> } = {};
  for (const f of flags) {
    const eq = f.indexOf('=');
    const ms = number('wan-delay', (eq < 0 ? f : f.slice(eq + 1)).replace(/ms$/, ''), 0, 0, MAX_WAN_DELAY_MS);
    if (eq < 0) out.wanDelayMs = ms;
    else (out.regionWanDelayMs ??= {})[f.slice(0, eq)] = ms;
  }
  return out;
}

/** What `lab fail` or `lab restore` is asked to do, parsed and checked. */
export type FaultCommand =
  | { readonly target: 'node'; readonly node: string; readonly what?: NodeFault }
  | { readonly target: 'api'; readonly ms?: number }
  | { readonly target: 'wan-loss'; readonly region: string; readonly percent?: number };

/** Kubernetes node names (DNS-1123 subdomains). */
const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const API_PAUSE_MS = { min: 1000, max: 3_600_000 };

/** `20s`, `1500ms`, `2m`: a whole number and its unit, from 1 s to 1 h. */
export function parseDuration(raw: string, flag: string): number {
  const m = /^(\d{1,7})(ms|s|m)$/.exec(raw);
  if (!m) throw new LabUsageError(`${flag} needs a duration such as 20s, 1500ms or 2m, not "${raw}"`);
  const ms = Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms' | 's' | 'm'];
  if (ms < API_PAUSE_MS.min || ms > API_PAUSE_MS.max) throw new LabUsageError(`${flag} ${raw}: the pause must be from 1s to 60m`);
  return ms;
}

/**
 * `fail NODE [--what W]`, `fail --api DURATION`, `restore NODE [--what W]`, `restore --api`:
 * exactly one of NODE and --api; --what one of NODE_FAULTS (fail defaults to node; restore to the
 * node's only fault); NODE a node name (whether the lab has it is checked against its plan).
 */
export function parseFaultArgs(sub: 'fail' | 'restore', positionals: readonly string[], values: { readonly what?: string | undefined; readonly api?: string | boolean | undefined; readonly 'wan-loss'?: string | undefined }): FaultCommand {
  const loss = values['wan-loss'];
  if (loss !== undefined) {
    if (positionals.length || values.what !== undefined || values.api !== undefined) throw new LabUsageError(`lab ${sub} --wan-loss takes no node, --what or --api`);
    if (sub === 'restore') return { target: 'wan-loss', region: loss };
    const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)=(\d+)%?$/.exec(loss);
    if (!m || Number(m[3]) < 1 || Number(m[3]) > 100) throw new LabUsageError(`--wan-loss must be REGION=PCT with PCT from 1 to 100 (hangzhou=20), not "${loss}"`);
    return { target: 'wan-loss', region: m[1]!, percent: Number(m[3]) };
  }
  const api = values.api;
  if (api !== undefined && api !== false) {
    if (positionals.length) throw new LabUsageError(`lab ${sub} --api takes no node (got "${positionals.join(' ')}")`);
    if (values.what !== undefined) throw new LabUsageError(`lab ${sub} --api takes no --what`);
    return sub === 'fail' ? { target: 'api', ms: parseDuration(String(api), '--api') } : { target: 'api' };
  }
  if (positionals.length !== 1) throw new LabUsageError(`lab ${sub} needs a node name${sub === 'fail' ? ' or --api DURATION' : ' or --api'}${positionals.length ? `, not ${positionals.length}` : ''}`);
  const node = positionals[0]!;
  if (node.length > 253 || !NODE_NAME.test(node)) throw new LabUsageError(`"${node}" is not a node name (a-z, 0-9, "-" and ".", as Kubernetes names nodes)`);
  const what = values.what;
  if (what !== undefined && !(NODE_FAULTS as readonly string[]).includes(what)) throw new LabUsageError(`--what must be one of ${NODE_FAULTS.join(', ')}, not "${what}"`);
  return { target: 'node', node, ...(what !== undefined ? { what: what as NodeFault } : sub === 'fail' && { what: 'node' as const }) };
}

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
      'wan-delay': { type: 'string', multiple: true },
      'same-edge-lan': { type: 'boolean' },
      wait: { type: 'string' },
      'no-wait': { type: 'boolean' },
      verbose: { type: 'boolean' },
      count: { type: 'string' },
      image: { type: 'string' },
      what: { type: 'string' },
      // A duration for fail, a switch for restore.
      api: { type: sub === 'fail' ? 'string' : 'boolean' },
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
          ...wanDelays(values['wan-delay'] ?? [], number),
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
      const c = parseFaultArgs(sub, positionals, values);
      const state = resolveLab(values.name, runDir);
      if (c.target === 'api') {
        io.stdout(`lab ${state.name}: ${c.ms !== undefined ? await labFailApi(state, c.ms) : await labRestoreApi(state)}\n`);
        return 0;
      }
      if (c.target === 'wan-loss') {
        io.stdout(`lab ${state.name}: ${c.percent !== undefined ? await labFailWanLoss(state, c.region, c.percent) : await labRestoreWanLoss(state, c.region)}\n`);
        return 0;
      }
      const done = sub === 'fail' ? await labFail(state, c.node, c.what) : await labRestore(state, c.node, c.what);
      io.stdout(`lab ${state.name}: node ${c.node}: ${done}\n`);
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
    case 'resume-api': {
      // Internal: the helper `fail --api` starts to end the pause.
      if (!values['state-dir']) throw new LabUsageError('lab resume-api needs --state-dir');
      const dir = values['state-dir'];
      await resumeApiWhenDue(new LabState(dirname(dir), basename(dir)));
      return 0;
    }
    default:
      throw new LabUsageError(`unknown lab subcommand "${sub}"`);
  }
}
