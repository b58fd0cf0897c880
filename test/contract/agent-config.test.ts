/** The agent's configuration: defaults, the mounted ConfigMap, and errors that say what is allowed. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAgentConfig } from '../../src/contract/agent-config.ts';

const env = { NODE_NAME: 'hz-1', NODE_IP: '192.168.1.11', POD_NAMESPACE: 'raven-system' };

test('node identity comes from the downward API environment; everything else has defaults', () => {
  const c = parseAgentConfig([], env, () => ({}));
  assert.equal(c, {
    nodeName: 'hz-1', nodeIP: '192.168.1.11', namespace: 'raven-system', stateDir: '/var/lib/raven', vpnDriver: 'wireguard', vpnPort: 4500,
    tunnelMTU: 0, underlayMTU: 1500, forwardNodeIP: false, metricsAddr: ':10265', healthAddr: ':10275', device: 'raven-wg0',
    proxy: { certDir: '/etc/raven/proxy', tunnelAddr: ':10262', httpAddr: ':10264', httpsAddr: ':10263', metricsAddr: ':10266' },
  });
  assert.ok(Object.isFrozen(c));
});

test('the compiled raven-agent-config, mounted as files, is read as written', () => {
  const dir = mkdtempSync(join(tmpdir(), 'raven-agent-cfg-'));
  try {
    const files = { 'vpn-driver': 'ipsec', 'vpn-port': '4500', 'tunnel-mtu': '1400', 'forward-node-ip': 'true', 'proxy-external-addr': ':10300', 'proxy-internal-insecure-addr': '127.0.0.1:10301', '..data': 'ignored' };
    for (const [k, v] of Object.entries(files)) writeFileSync(join(dir, k), v + '\n');
    // As `kubectl create secret --from-file` stores it: with the file's trailing newline.
    const psk = `${dir}.psk`;
    writeFileSync(psk, 's3cret\n', { mode: 0o400 });
    const c = parseAgentConfig(['--config-dir', dir, '--proxy-cert-dir', '/run/secrets/proxy', '--psk-file', psk], env);
    assert.equal([c.vpnDriver, c.tunnelMTU, c.forwardNodeIP, c.psk, c.ignoredKeys], ['ipsec', 1400, true, 's3cret', undefined]);
    assert.equal(c.proxy, { certDir: '/run/secrets/proxy', tunnelAddr: ':10300', httpAddr: '127.0.0.1:10301', httpsAddr: ':10263', metricsAddr: ':10266' });
  } finally {
    rmSync(dir, { recursive: true });
    rmSync(`${dir}.psk`, { force: true });
  }
});

test('bad values are all reported, each with what is allowed', () => {
  const files = { 'vpn-driver': 'libreswan', 'vpn-port': '70000', 'forward-node-ip': 'yes', 'metric-bind-addr': 'localhost' };
  try {
    parseAgentConfig(['--config-dir', 'x'], { NODE_IP: 'not-an-ip' }, () => files);
    assert.unreachable('should have thrown');
  } catch (err) {
    const msg = (err as Error).message;
    for (const part of ['--node-name (or $NODE_NAME) is required', 'node IP "not-an-ip" is not an IP address', 'vpn-driver "libreswan" is not allowed; use one of: wireguard, ipsec', 'vpn-port "70000" must be an integer from 1 to 65535', 'forward-node-ip "yes" must be true or false', 'metric-bind-addr: invalid address "localhost"']) {
      assert.ok(msg.includes(part), `missing "${part}" in:\n${msg}`);
    }
  }
});

test('--lease-seconds sets a candidate\'s heartbeat lease; a bad one is refused with the range', () => {
  assert.is(parseAgentConfig([], env, () => ({})).leaseSeconds, undefined, 'default: the contract\'s');
  assert.is(parseAgentConfig(['--lease-seconds', '8'], env, () => ({})).leaseSeconds, 8);
  for (const bad of ['0', '2.5', 'ten', '121']) {
    assert.throws(() => parseAgentConfig(['--lease-seconds', bad], env, () => ({})), (e: Error) => e.message.includes(`--lease-seconds "${bad}" is not a whole number of seconds from 1 to 120`));
  }
});

test('files that are no key of raven-agent-config are reported as ignored, never read, and do not stop the agent', () => {
  const dir = mkdtempSync(join(tmpdir(), 'raven-agent-cfg-'));
  try {
    // nat-traversal and tunnel-bind-addr: keys older compilers wrote.
    for (const [k, v] of Object.entries({ 'nat-traversal': 'true', 'tunnel-bind-addr': ':4500', 'vpn-port': '4501' })) writeFileSync(join(dir, k), v);
    const c = parseAgentConfig(['--config-dir', dir], env);
    assert.equal([c.vpnPort, c.ignoredKeys], [4501, ['nat-traversal', 'tunnel-bind-addr']]);
  } finally {
    rmSync(dir, { recursive: true });
  }
});

const ipsec = (): Record<string, string> => ({ 'vpn-driver': 'ipsec' });

test('the PSK is read once, from the mounted file at its default path, and only with the ipsec driver', () => {
  const asked: string[] = [];
  const c = parseAgentConfig(['--config-dir', 'x'], env, ipsec, (path) => (asked.push(path), 'k3y'));
  assert.equal([c.psk, asked], ['k3y', ['/etc/raven/ipsec/psk']]);
  parseAgentConfig(['--config-dir', 'x'], env, () => ({}), (path) => (asked.push(path), 'k3y'));
  assert.equal(asked, ['/etc/raven/ipsec/psk'], 'WireGuard reads no PSK');
});

test('a node without the PSK file (no gateway candidate) runs, with no PSK', () => {
  const c = parseAgentConfig(['--config-dir', 'x', '--psk-file', '/nonexistent/psk'], env, ipsec);
  assert.equal([c.vpnDriver, c.psk], ['ipsec', undefined]);
});

test('the PSK in the environment is refused, not used: /proc/<pid>/environ would keep it', () => {
  assert.throws(() => parseAgentConfig(['--config-dir', 'x'], { ...env, VPN_CONNECTION_PSK: 's3cret' }, ipsec, () => 'k3y'), /\$VPN_CONNECTION_PSK is no longer read: mount the PSK Secret as a file and pass --psk-file/);
});

test('an empty or unreadable PSK file is an error that never shows the file', () => {
  assert.throws(() => parseAgentConfig(['--config-dir', 'x'], env, ipsec, () => '\n'), /the PSK file \/etc\/raven\/ipsec\/psk is empty/);
  const denied = Object.assign(new Error('EACCES: permission denied, open'), { code: 'EACCES' });
  assert.throws(() => parseAgentConfig(['--config-dir', 'x'], env, ipsec, () => { throw denied; }), /failed to read the PSK file \/etc\/raven\/ipsec\/psk: EACCES/);
});

test.run();
