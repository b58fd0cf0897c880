/**
 * A real `Agent` (in this process, against the embedded API server) as the active WireGuard gateway
 * of hangzhou, in its own throwaway network namespace, with the cloud as its one peer. Shared by the
 * agent's kernel tests that act behind its back (repair, backend exit); each adds its own probes.
 * Needs root, wireguard-tools and wireguard-go.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { Agent, type AgentOptions } from '../../src/agent/agent.ts';
import type { AgentConfig } from '../../src/contract/agent-config.ts';
import { GATEWAY, type Lab, startLab } from './apiserver-support.ts';
import { PREFIX, RecordingRunner, run, sh } from './netns.ts';

export const NS = 'raven-system';
export const NODE = 'hz-1';
export const key = (): string => spawnSync('wg', ['pubkey'], { input: spawnSync('wg', ['genkey'], { encoding: 'utf8' }).stdout, encoding: 'utf8' }).stdout.trim();

export interface GatewayAgent {
  readonly ns: string;
  readonly device: string;
  readonly lab: Lab;
  readonly agent: Agent;
  /** The cloud gateway's public key: the one peer the agent must configure. */
  readonly cloudKey: string;
  /** wireguard-go's PID file in the agent's state dir. */
  readonly pidFile: string;
  logs(): string;
  /** Table 9031 in the namespace. */
  table(): Promise<string>;
  /** The WireGuard device's peers (none when the device is gone). */
  peers(): Promise<string[]>;
  /** A wireguard-go for our device runs (not a zombie). */
  daemonRuns(): boolean;
  /** Stops the agent and the API, removes the namespace and state; asserts nothing of ours is left. */
  stop(): Promise<void>;
}

/** Sets up the namespace, the API with both Gateways and the agent; `agent.run()` is the caller's. */
export async function createGatewayAgent(tag: string, vpnPort: number, options: AgentOptions = {}): Promise<GatewayAgent> {
  const ns = `${PREFIX}-${tag}`;
  const device = `rg${tag}${process.pid % 100000}`.slice(0, 15);
  const state = mkdtempSync(join(tmpdir(), `raven-${tag}-`));
  sh('ip', ['netns', 'add', ns]);
  sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  const lab = await startLab({ seedCrds: true });
  const cloudKey = key();
  const logged: string[] = [];
  const line = (level: string) => (m: string, f?: Record<string, unknown>) => logged.push(`${level} ${m} ${JSON.stringify(f ?? {})}`);
  const config: AgentConfig = {
    nodeName: NODE, nodeIP: '192.168.1.11', namespace: NS, stateDir: state, vpnDriver: 'wireguard', vpnPort, tunnelMTU: 1420, underlayMTU: 1500,
    forwardNodeIP: false, metricsAddr: '127.0.0.1:0', healthAddr: '127.0.0.1:0', device, netns: ns,
    proxy: { certDir: join(state, 'proxy'), tunnelAddr: '127.0.0.1:0', httpAddr: '127.0.0.1:0', httpsAddr: '127.0.0.1:0', metricsAddr: '127.0.0.1:0' },
  };
  const agent = new Agent(lab.kc, config, new RecordingRunner(), { info: line('info'), warn: line('warn'), error: line('error') }, options);
  const gw: GatewayAgent = {
    ns,
    device,
    lab,
    agent,
    cloudKey,
    pidFile: join(state, `wireguard-go.${device}.pid`),
    logs: () => logged.join('\n'),
    table: async () => (await run('ip', ['-n', ns, 'route', 'show', 'table', '9031'])).out.trim(),
    peers: async () => {
      const r = await run('ip', ['netns', 'exec', ns, 'wg', 'show', device, 'peers']);
      return r.code === 0 ? r.out.trim().split('\n').filter(Boolean) : [];
    },
    daemonRuns: () => sh('ps', ['-eo', 'stat,args']).split('\n').some((l) => l.includes('wireguard-go') && l.includes(device) && !l.trim().startsWith('Z')),
    stop: async () => {
      await agent.stop();
      await lab.api.close();
      spawnSync('ip', ['netns', 'del', ns]);
      rmSync(state, { recursive: true, force: true });
      assert.not.ok(existsSync(`/var/run/wireguard/${device}.sock`), 'the UAPI socket is removed');
      assert.not.ok(gw.daemonRuns(), 'no wireguard-go of ours is left');
    },
  };
  try {
    await lab.core.createNamespace({ body: { metadata: { name: NS } } });
    for (const g of gateways(cloudKey)) {
      const stored = (await lab.custom.createClusterCustomObject({ ...GATEWAY, body: g })) as { metadata: { resourceVersion: string } };
      await lab.custom.replaceClusterCustomObjectStatus({ ...GATEWAY, name: g.metadata.name, body: { ...g, metadata: { ...g.metadata, resourceVersion: stored.metadata.resourceVersion } } });
    }
  } catch (err) {
    await gw.stop();
    throw err;
  }
  return gw;
}

function gateways(cloudKey: string) {
  return [
    {
      apiVersion: `${GATEWAY.group}/${GATEWAY.version}`,
      kind: 'Gateway',
      metadata: { name: 'gw-cloud' },
      spec: { exposeType: 'PublicIP', endpoints: [{ nodeName: 'cloud-1', type: 'tunnel' }] },
      status: {
        activeEndpoints: [{ nodeName: 'cloud-1', type: 'tunnel', port: 4500, publicIP: '203.0.113.10', config: { publicKey: cloudKey } }],
        nodes: [{ nodeName: 'cloud-1', privateIP: '10.0.0.10', subnets: ['10.244.0.0/24'] }],
      },
    },
    {
      apiVersion: `${GATEWAY.group}/${GATEWAY.version}`,
      kind: 'Gateway',
      metadata: { name: 'gw-hz' },
      // Reachable too, so the cloud's peer is one we never nudge (a nudge re-creates peers).
      spec: { exposeType: 'PublicIP', endpoints: [{ nodeName: NODE, type: 'tunnel' }] },
      status: {
        activeEndpoints: [{ nodeName: NODE, type: 'tunnel', port: 4500, publicIP: '198.51.100.21', config: {} }],
        nodes: [{ nodeName: NODE, privateIP: '192.168.1.11', subnets: ['10.244.1.0/24'] }],
      },
    },
  ];
}
