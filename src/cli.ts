/**
 * `raven` command line. Exit codes: 0 success; 1 invalid input or failure; 2 usage error.
 */
import { parseArgs } from 'node:util';
import { compile, validateSources } from './compiler/compile.js';
import { readSources, writeTree } from './compiler/files.js';
import { type Diagnostic, formatDiagnostic, hasErrors, printable } from './topology/diagnostics.js';
import { VERSION } from './platform/version.js';

const USAGE = `usage:
  raven validate FILE...             check topology files; errors go to stderr as file:line:col
  raven synth FILE... --out DIR      compile topology files into DIR (replaced atomically)
  raven certs FILE [--out DIR] [--psk-file F] [--client-ca F] [--node-ca F] [--server-san S]...
                                     the Secrets the cluster needs that never go into git: the IPsec
                                     PSK (ipsec) and each region's raven-proxy-<region> (l7Proxy),
                                     as YAML on stdout (| kubectl apply -f -) or files in DIR
                                     (raven certs --help)
  raven controller [--kubeconfig FILE] [--leader-elect] ...
                                     run the gateway controller (raven controller --help for flags)
  raven agent [--node-name N] [--node-ip IP] ...
                                     run the node agent (raven agent --help for flags)
  raven proxy --config FILE          the L7 proxy of a proxy endpoint (started by the agent)
  raven lab up TOPOLOGY [--name N] ...  (root) the topology's whole cluster on this machine: a
                                     network namespace per node, real tunnels, the embedded API,
                                     the controller and an agent per node (raven lab --help)
  raven lab check | fail NODE | restore NODE | down
                                     connectivity matrix, failure injection, teardown
  raven lab apiserver --kubeconfig FILE [--port N] [--host ADDR] [--crds DIR]...
                                     serve an in-process Kubernetes API (plain HTTP, no auth) until
                                     SIGINT/SIGTERM; write a kubeconfig for it to FILE; --crds loads
                                     every CustomResourceDefinition in DIR's YAML files (repeatable)
  raven --version                    print this release's version (package.json's)

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
      case 'certs':
        return await certs(rest, io);
      case 'lab':
        return await lab(rest, io);
      case 'controller':
        return await (await import('./controller/main.js')).runController(rest);
      case 'agent':
        return await (await import('./agent/main.js')).runAgent(rest);
      case 'proxy':
        return await (await import('./proxy/main.js')).runProxy(rest);
      case '--version':
      case '-v':
        io.stdout(VERSION + '\n');
        return 0;
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
    if (err instanceof UsageError || isParseArgsError(err)) {
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
  const { topologies, diagnostics } = read.overLimit ? { topologies: [], diagnostics: [] } : validateSources(read.sources);
  const all = [...read.diagnostics, ...diagnostics];
  report(all, io);
  if (hasErrors(all)) {
    const n = all.filter((d) => d.severity === 'error').length;
    io.stderr(`${n} error${n === 1 ? '' : 's'}\n`);
    return 1;
  }
  for (const t of topologies) io.stdout(`${printable(t.source)}: ok (cluster ${t.cluster}, ${t.regions.length} region${t.regions.length === 1 ? "" : "s"})\n`);
  return 0;
}

async function synth(args: readonly string[], io: Io): Promise<number> {
  const { positionals, values } = files(args, { out: { type: 'string' } });
  if (!values.out) throw new UsageError('synth needs --out DIR');
  const read = readSources(positionals);
  const result = read.overLimit ? { diagnostics: [], topologies: [] } : compile(read.sources);
  const all = [...read.diagnostics, ...result.diagnostics];
  report(all, io);
  if (hasErrors(all) || !result.files) {
    io.stderr(`nothing written to ${printable(values.out)}\n`);
    return 1;
  }
  writeTree(values.out, result.files);
  io.stdout(`wrote ${result.files.size} files for ${result.topologies.map((t) => t.cluster).join(', ')} to ${printable(values.out)}\n`);
  return 0;
}

const CERTS_USAGE = `usage: raven certs FILE [options]
  Makes, for the one cluster of topology FILE, the Secrets its agent DaemonSets mount and that must
  never be in git or dist/: the IPsec PSK Secret (backend ipsec) and, with l7Proxy, one
  raven-proxy-<region> per region with gateway candidates (a new tunnel CA: exposed regions get the
  server pair, client-ca.crt and node-ca.crt; the others a client pair with CN gw-<region>).
  Names, keys and the namespace are read from the compiled DaemonSets.

  --out DIR           write secret-<name>.yaml files (mode 0600) into DIR instead of stdout;
                      refused inside dist/ or a git work tree, and never over an existing file
  --psk-file FILE     use this PSK (one line) instead of 32 new random bytes (hex)
  --client-ca FILE    CA of kube-apiserver's kubelet client certificate (client-ca.crt); required
                      when l7Proxy is on and a region is exposed
  --node-ca FILE      the cluster CA, which signs kubelets' serving certificates (node-ca.crt);
                      required when l7Proxy is on and a region is exposed
  --server-san S      another IP address or DNS name for the proxy server certificate (repeatable):
                      a LoadBalancer region's address, a node's LAN address
  --days N            validity of the tunnel CA and its certificates (default 365)

  raven certs topologies/seed.yaml --client-ca ca.crt --node-ca ca.crt | kubectl apply -f -`;

async function certs(args: readonly string[], io: Io): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    io.stdout(CERTS_USAGE + '\n');
    return 0;
  }
  try {
    return await makeCerts(args, io);
  } catch (err) {
    if (!(err instanceof UsageError || isParseArgsError(err))) throw err;
    io.stderr(`raven: ${(err as Error).message}\n(raven certs --help for the options)\n`);
    return 2;
  }
}

async function makeCerts(args: readonly string[], io: Io): Promise<number> {
  const { positionals, values } = parseArgs({
    args: [...args],
    options: {
      out: { type: 'string' },
      'psk-file': { type: 'string' },
      'client-ca': { type: 'string' },
      'node-ca': { type: 'string' },
      'server-san': { type: 'string', multiple: true },
      days: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 1) throw new UsageError(positionals.length ? 'certs takes one topology file: the Secrets are for one cluster' : 'no topology file given');
  const days = values.days === undefined ? undefined : Number(values.days);
  if (days !== undefined && (!/^\d+$/.test(values.days!) || days < 1 || days > 36500)) throw new UsageError(`--days must be a whole number of days, 1-36500, not "${values.days}"`);
  const read = readSources(positionals);
  const result = read.overLimit ? { diagnostics: [], topologies: [] } : compile(read.sources);
  const all = [...read.diagnostics, ...result.diagnostics];
  report(all, io);
  if (hasErrors(all) || !result.files) {
    io.stderr(`no Secrets made${values.out ? `, nothing written to ${printable(values.out)}` : ''}\n`);
    return 1;
  }
  if (result.topologies.length !== 1) throw new UsageError(`certs takes one cluster; ${printable(positionals[0]!)} defines ${result.topologies.length} (${result.topologies.map((t) => t.cluster).join(', ')})`);
  const t = result.topologies[0]!;
  const { clusterObjects, makeSecrets, missingInputs, outDirProblem, parseSan, planSecrets, readCA, readPsk, renderSecrets, writeSecrets } = await import('./compiler/certs.js');
  const plan = planSecrets(t, clusterObjects(result.files, t.cluster));
  const missing = missingInputs(plan, { ...(values['client-ca'] && { clientCA: '' }), ...(values['node-ca'] && { nodeCA: '' }) });
  if (missing.length) throw new UsageError(missing.join('\nraven: '));
  if (values.out) {
    const problem = outDirProblem(values.out);
    if (problem) throw new Error(`refusing to write Secrets: ${problem}; choose a directory outside, or pipe to kubectl apply -f -`);
  }
  const servers = plan.proxy.some((p) => p.role === 'server');
  const note = (s: string): void => io.stderr(`raven certs: ${s}\n`);
  if (values['psk-file'] && !plan.psk) note(`--psk-file ignored: cluster ${t.cluster} uses ${t.vpn.backend}, which needs no PSK Secret`);
  if (!servers) for (const flag of ['client-ca', 'node-ca', 'server-san'] as const) if (values[flag]) note(`--${flag} ignored: no exposed region runs the L7 proxy server`);
  const extraSans = values['server-san'] ?? [];
  for (const san of extraSans) {
    const parsed = parseSan(san);
    if ('problem' in parsed) throw new UsageError(`--server-san ${printable(san)}: ${parsed.problem}`);
  }
  const unknown = extraSans.length ? [] : plan.addressUnknown;
  if (unknown.length) note(`region${unknown.length === 1 ? '' : 's'} ${unknown.join(', ')} ${unknown.length === 1 ? 'has' : 'have'} no public IP in the topology (LoadBalancer): add the address edges dial with --server-san, or their proxies will not verify the server certificate`);
  const secrets = makeSecrets(plan, {
    ...(values['psk-file'] && plan.psk && { psk: readPsk(values['psk-file']) }),
    ...(servers && values['client-ca'] && { clientCA: readCA(values['client-ca'], '--client-ca') }),
    ...(servers && values['node-ca'] && { nodeCA: readCA(values['node-ca'], '--node-ca') }),
    ...(servers && { extraSans }),
    ...(days !== undefined && { days }),
  });
  if (secrets.length === 0) {
    note(`cluster ${t.cluster} needs no Secret (${t.vpn.backend}${t.l7Proxy ? '' : ', no L7 proxy'})`);
    return 0;
  }
  const names = secrets.map((s) => s.metadata.name).join(', ');
  if (values.out) {
    const files = writeSecrets(values.out, secrets, printable(t.source));
    note(`wrote ${files.length} Secret${files.length === 1 ? '' : 's'} of cluster ${t.cluster} (namespace ${plan.namespace}: ${names}) to ${printable(values.out)}, mode 0600`);
  } else {
    io.stdout(renderSecrets(secrets, printable(t.source)));
    note(`${secrets.length} Secret${secrets.length === 1 ? '' : 's'} of cluster ${t.cluster} (namespace ${plan.namespace}: ${names}) on stdout`);
  }
  return 0;
}

async function lab(args: readonly string[], io: Io): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined) throw new UsageError('lab needs a subcommand: up, check, fail, restore, down or apiserver');
  if (sub !== 'apiserver') {
    const { labCommand, LabUsageError, LAB_USAGE } = await import('./lab/cli.js');
    if (sub === '--help' || sub === '-h' || rest.includes('--help') || rest.includes('-h')) {
      io.stdout(LAB_USAGE + '\n');
      return 0;
    }
    try {
      return await labCommand(sub, rest, io);
    } catch (err) {
      if (err instanceof LabUsageError || isParseArgsError(err)) {
        io.stderr(`raven: ${(err as Error).message}\n${LAB_USAGE}\n`);
        return 2;
      }
      throw err;
    }
  }
  const { positionals, values } = parseArgs({
    args: rest,
    options: { port: { type: 'string' }, host: { type: 'string' }, kubeconfig: { type: 'string' }, crds: { type: 'string', multiple: true } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  if (!values.kubeconfig) throw new UsageError('lab apiserver needs --kubeconfig FILE');
  const port = values.port === undefined ? 0 : Number(values.port);
  if (!/^\d+$/.test(values.port ?? '0') || port > 65535) throw new UsageError(`--port must be 0-65535, not "${values.port}"`);
  const { startApiServer, loadCrds } = await import('./testkit/apiserver/index.js');
  const { writeFileSync } = await import('node:fs');
  const crds = loadCrds(values.crds ?? []);
  const api = await startApiServer({ port, ...(values.host ? { host: values.host } : {}), crds });
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const onSignal = (): void => stopped();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    writeFileSync(values.kubeconfig, api.kubeconfigYaml(), { mode: 0o600 });
    const names = crds.map((c) => (c as { metadata?: { name?: string } }).metadata?.name).join(', ');
    io.stdout(`raven lab apiserver: serving ${api.url}; kubeconfig written to ${values.kubeconfig}${crds.length ? `; CRDs: ${names}` : ''}\n`);
    await done;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await api.close();
  }
  io.stdout('raven lab apiserver: stopped\n');
  return 0;
}

function isParseArgsError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS');
}
