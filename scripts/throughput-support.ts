/**
 * What the throughput benchmarks share: a "pod" address on each side of a namespace pair
 * (10.99.1.1 in a, 10.99.2.1 in b), an iperf3 server in b, 4 s TCP runs from a, and the report.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { sh } from '../test/support/netns.ts';

export interface Pods {
  /** One 4 s iperf3 TCP run from a's pod to b's, in Mbit/s. */
  iperf(): number;
  stop(): void;
}

export async function startPods(ns: { a: string; b: string }): Promise<Pods> {
  sh('ip', ['-n', ns.a, 'addr', 'add', '10.99.1.1/32', 'dev', 'lo']);
  sh('ip', ['-n', ns.b, 'addr', 'add', '10.99.2.1/32', 'dev', 'lo']);
  const server: ChildProcess = spawn('ip', ['netns', 'exec', ns.b, 'iperf3', '-s', '-B', '10.99.2.1'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  return {
    iperf: () => {
      const r = spawnSync('ip', ['netns', 'exec', ns.a, 'iperf3', '-c', '10.99.2.1', '-B', '10.99.1.1', '-t', '4', '-J'], { encoding: 'utf8', timeout: 20_000 });
      if (r.status !== 0) throw new Error(`iperf3 failed: ${r.stderr || r.stdout.slice(0, 300)}`);
      return JSON.parse(r.stdout).end.sum_received.bits_per_second / 1e6;
    },
    stop: () => {
      if (server.exitCode === null && server.signalCode === null) server.kill('SIGTERM');
    },
  };
}

/** Medians of the agent's and the raw runs, and their ratio, as JSON lines; the runs on stderr. */
export function report(names: { agent: string; raw: string; ratio: string }, results: { raven: number[]; raw: number[] }): void {
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const [raven, raw] = [median(results.raven), median(results.raw)];
  const out = (name: string, value: number, unit: string): void => console.log(JSON.stringify({ name, value: Math.round(value * 100) / 100, unit }));
  out(names.agent, raven, 'Mbit/s');
  out(names.raw, raw, 'Mbit/s');
  out(names.ratio, raven / raw, 'ratio');
  console.error(`raven=${results.raven.map(Math.round).join(',')} raw=${results.raw.map(Math.round).join(',')}`);
}
