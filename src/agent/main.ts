/**
 * `raven agent`: configuration parsed once, then the agent runs until SIGTERM/SIGINT. It then
 * leaves the data plane to the next agent (which adopts it), or removes it with --cleanup-on-exit.
 */
import * as k8s from '@kubernetes/client-node';
import { createLogger } from '../platform/log.js';
import { runUntilSignal } from '../platform/run-until-signal.js';
import { Agent } from './agent.js';
import { ExecRunner } from '../platform/command-runner.js';
import { AGENT_USAGE, parseAgentConfig } from '../contract/agent-config.js';

export async function runAgent(args: readonly string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(AGENT_USAGE + '\n');
    return 0;
  }
  // The IPsec PSK, if this node holds it, is read here once, from its file, and lives in the parsed
  // config only: never in the environment, which every child (ip, ping, wg, charon) would inherit.
  const config = parseAgentConfig(args, process.env);
  const kc = new k8s.KubeConfig();
  if (config.kubeconfig) kc.loadFromFile(config.kubeconfig);
  else kc.loadFromDefault();
  const log = createLogger(`agent/${config.nodeName}`);
  if (config.ignoredKeys) log.warn('raven-agent-config has keys this agent does not read; ignoring them', { keys: config.ignoredKeys.join(',') });
  if (config.vpnDriver === 'ipsec' && !config.psk) log.info('no IPsec PSK on this node (not a gateway candidate): it routes through its gateway and never runs the tunnel');
  const agent = new Agent(kc, config, new ExecRunner(), log);
  await agent.run();
  log.info('serving health and metrics', { port: agent.port, metricsPort: agent.metricsPort });
  if (config.cleanupOnExit) await runUntilSignal(() => agent.stop(), log, 'shutting down; removing routes and tunnels');
  else await runUntilSignal(() => agent.release(), log, 'shutting down; leaving routes and tunnels in place for the next agent (--cleanup-on-exit removes them)');
  return 0;
}
