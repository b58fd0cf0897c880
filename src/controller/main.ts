/**
 * `raven controller`: flags and environment parsed once into options, then the controller runs
 * until SIGTERM/SIGINT.
 */
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { CONTROLLER_HTTP_PORT } from '../contract/names.js';
import { parseDuration } from '../platform/duration.js';
import { createLogger } from '../platform/log.js';
import { runUntilSignal } from '../platform/run-until-signal.js';
import { type ControllerOptions, GatewayController } from './controller.js';

export const CONTROLLER_USAGE = `usage: raven controller [flags]
  --kubeconfig FILE        kubeconfig to use (default: $KUBECONFIG, then in-cluster)
  --namespace NS           raven namespace: raven-cfg, heartbeat Leases (default: $POD_NAMESPACE or raven-system)
  --leader-elect           elect one active replica through the Lease raven-controller
  --identity ID            this replica's name in the leader Lease (default: $POD_NAME or host-pid)
  --http-addr ADDR         /healthz, /readyz, /metrics (default :${CONTROLLER_HTTP_PORT})
  --lease-duration D       leader lease duration (default 15s)
  --retry-period D         leader renew/retry period (default 2s)
  --workers N              Gateways reconciled in parallel (default 2)`;

export function controllerOptions(args: readonly string[], env: NodeJS.ProcessEnv): ControllerOptions & { kubeconfig?: string } {
  const { values } = parseArgs({
    args: [...args],
    strict: true,
    options: {
      kubeconfig: { type: 'string' },
      namespace: { type: 'string' },
      'leader-elect': { type: 'boolean' },
      identity: { type: 'string' },
      'http-addr': { type: 'string' },
      'lease-duration': { type: 'string' },
      'retry-period': { type: 'string' },
      workers: { type: 'string' },
    },
  });
  const leaseMs = parseDuration(values['lease-duration'] ?? '15s');
  if (leaseMs < 1000) throw new Error('--lease-duration must be at least 1s (Lease durations are whole seconds)');
  const workers = Number(values.workers ?? '2');
  if (!Number.isInteger(workers) || workers < 1) throw new Error(`--workers must be a positive integer, got "${values.workers}"`);
  return Object.freeze({
    ...(values.kubeconfig && { kubeconfig: values.kubeconfig }),
    namespace: values.namespace ?? env.POD_NAMESPACE ?? 'raven-system',
    identity: values.identity ?? env.POD_NAME ?? `${hostname()}-${process.pid}`,
    leaderElect: values['leader-elect'] ?? false,
    httpAddr: values['http-addr'] ?? `:${CONTROLLER_HTTP_PORT}`,
    leaseDurationSeconds: Math.round(leaseMs / 1000),
    retryPeriodMs: parseDuration(values['retry-period'] ?? '2s'),
    workers,
  });
}

export async function runController(args: readonly string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(CONTROLLER_USAGE + '\n');
    return 0;
  }
  const opts = controllerOptions(args, process.env);
  const kc = new k8s.KubeConfig();
  if (opts.kubeconfig) kc.loadFromFile(opts.kubeconfig);
  else kc.loadFromDefault();
  const log = createLogger('controller');
  const controller = new GatewayController(kc, opts, log);
  await controller.run();
  await runUntilSignal(() => controller.stop(), log);
  return 0;
}
