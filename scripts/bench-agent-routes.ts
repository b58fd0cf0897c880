/**
 * Route programming cost on the real kernel, inside a throwaway network namespace: 1,000 remote
 * subnets applied from scratch, then the same plan again (unchanged: reads only), then a 10 %
 * change. Each figure is the median of 7 runs. Prints JSON lines {"name","value","unit"}.
 */
import { spawnSync } from 'node:child_process';
import { ExecRunner } from '../src/platform/command-runner.ts';
import type { RoutePlan } from '../src/agent/plan.ts';
import { RouteTable } from '../src/agent/dataplane/route-table.ts';

const ns = `rgb-${process.pid}`;
const run = (args: string[]): void => {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
};
run(['netns', 'add', ns]);
try {
  run(['-n', ns, 'link', 'add', 'rgb0', 'type', 'veth', 'peer', 'name', 'rgb1']);
  run(['-n', ns, 'addr', 'add', '192.168.77.1/24', 'dev', 'rgb0']);
  run(['-n', ns, 'link', 'set', 'rgb0', 'up']);
  run(['-n', ns, 'link', 'set', 'rgb1', 'up']);
  const routes = (n: number, mtu = 1420): RoutePlan[] => Array.from({ length: n }, (_, i) => ({ dst: `10.${(i >> 8) + 100}.${i & 255}.0/24`, via: '192.168.77.2', mtu }));
  const table = new RouteTable(new ExecRunner(), { table: 9031, priority: 9031, netns: ns });
  const time = async (f: () => Promise<unknown>): Promise<number> => {
    const t = performance.now();
    await f();
    return performance.now() - t;
  };
  const scratch: number[] = [];
  const unchanged: number[] = [];
  const changed: number[] = [];
  const desired = routes(1000);
  const tenPercent = desired.map((r, i) => (i % 10 === 0 ? { ...r, mtu: 1380 } : r));
  for (let i = 0; i < 7; i++) {
    await table.cleanUp();
    scratch.push(await time(() => table.set(desired)));
    unchanged.push(await time(() => table.set(desired)));
    changed.push(await time(() => table.set(tenPercent)));
    const now = await table.current();
    if (now.length !== 1000 || now.filter((r) => r.mtu === 1380).length !== 100) throw new Error(`kernel state differs from the plan: ${now.length} routes`);
  }
  await table.cleanUp();
  const median = (xs: number[]): number => Math.round([...xs].sort((a, b) => a - b)[3]! * 10) / 10;
  for (const [name, xs] of [['agent_routes_apply_1000_from_scratch', scratch], ['agent_routes_apply_1000_unchanged', unchanged], ['agent_routes_apply_1000_10pct_changed', changed]] as const) {
    console.log(JSON.stringify({ name, value: median(xs), unit: 'ms' }));
  }
} finally {
  spawnSync('ip', ['netns', 'del', ns]);
}
