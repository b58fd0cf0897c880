/** `raven agent`: configuration parsed once, then the agent runs until SIGTERM/SIGINT and cleans up. */
import * as k8s from '@kubernetes/client-node';
import { createLogger } from '../log.js';
import { runUntilSignal } from '../run-until-signal.js';
import { Agent } from './agent.js';
import { ExecRunner } from './command-runner.js';
import { AGENT_USAGE, parseAgentConfig } from './config.js';

export async function runAgent(args: readonly string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(AGENT_USAGE + '\n');
    return 0;
  }
  const config = parseAgentConfig(args, process.env);
  // The PSK now lives in the parsed config only: no child process (ip, ping, wg, charon) inherits it.
  delete process.env.VPN_CONNECTION_PSK;
  const kc = new k8s.KubeConfig();
  if (config.kubeconfig) kc.loadFromFile(config.kubeconfig);
  else kc.loadFromDefault();
  const log = createLogger(`agent/${config.nodeName}`);
  const agent = new Agent(kc, config, new ExecRunner(), log);
  await agent.run();
  log.info('serving health and metrics', { port: agent.port, metricsPort: agent.metricsPort });
  await runUntilSignal(() => agent.stop(), log, 'shutting down; removing routes and tunnels');
  return 0;
}
