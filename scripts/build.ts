/**
 * `npm run build` (after `tsc --noEmit`): bundles src/raven.ts, and everything it imports with the
 * production dependencies inlined, into build/ with esbuild — ESM for Node 20, split so that each
 * command loads only its own code (validate never parses the Kubernetes client). build/ then runs with
 * plain `node build/raven.js` and nothing else beside it: no node_modules, no package.json. Why
 * bundled and split: docs/0009-build.md.
 *
 * Others may run raven from build/ while this writes it, so every file is written under a temporary
 * name and renamed, the entry last; files of the previous build that this one does not produce are
 * removed after. The entry's modification time is set to when this build started reading sources, so
 * bin/raven.mjs sees an edit made during the build as newer than the build.
 */
import { build, type Metafile, type Plugin } from 'esbuild';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const ENTRY = 'raven.js';
const NOTICES = 'THIRD-PARTY-LICENSES.txt';

/** Bundled CommonJS packages (cdk8s, the Kubernetes client) call require() for Node's own modules. */
const REQUIRE_SHIM = "import { createRequire as __ravenCreateRequire } from 'node:module'; const require = __ravenCreateRequire(import.meta.url);";

/**
 * src/platform/version.ts imports package.json for its version; the bundle gets that field alone, not the
 * whole manifest (scripts, dependency ranges).
 */
const packageVersionOnly: Plugin = {
  name: 'package-version-only',
  setup(b) {
    const manifest = join(ROOT, 'package.json');
    b.onLoad({ filter: /[/\\]package\.json$/ }, (args) => {
      if (args.path !== manifest) return undefined;
      const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version: string };
      return { contents: JSON.stringify({ version }), loader: 'json' };
    });
  },
};

/** `--out DIR` (default build/): where to write; tests build into a folder of their own. */
async function main(argv: readonly string[]): Promise<void> {
  const { values } = parseArgs({ args: [...argv], options: { out: { type: 'string' } }, strict: true });
  const OUT = resolve(values.out ?? join(ROOT, 'build'));
  const started = new Date();
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: { raven: 'src/raven.ts' },
    outdir: OUT,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    chunkNames: '[name]-[hash]',
    banner: { js: REQUIRE_SHIM },
    legalComments: 'none',
    metafile: true,
    write: false,
    plugins: [packageVersionOnly],
    logLevel: 'warning',
  });
  const outputs = new Map<string, Uint8Array>();
  for (const f of result.outputFiles) outputs.set(relative(OUT, f.path), f.contents);
  outputs.set(NOTICES, Buffer.from(thirdPartyNotices(result.metafile)));

  mkdirSync(OUT, { recursive: true });
  const names = [...outputs.keys()].sort((a, b) => (a === ENTRY ? 1 : b === ENTRY ? -1 : a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) {
    const tmp = join(OUT, `.${name}.tmp-${process.pid}`);
    writeFileSync(tmp, outputs.get(name)!);
    renameSync(tmp, join(OUT, name));
  }
  utimesSync(join(OUT, ENTRY), started, started);
  for (const name of readdirSync(OUT)) {
    if (!outputs.has(name) && !name.startsWith('.')) rmSync(join(OUT, name), { recursive: true, force: true });
  }
  const bytes = [...outputs.values()].reduce((n, b) => n + b.byteLength, 0);
  process.stdout.write(`build: ${outputs.size} files, ${(bytes / 2 ** 20).toFixed(1)} MiB in ${relative(process.cwd(), OUT) || '.'}/ (${Date.now() - started.getTime()} ms)\n`);
}

/**
 * The licence of every package the bundle inlines, with its LICENSE text, sorted by name: build/ ships
 * their code, so it ships their terms too.
 */
function thirdPartyNotices(metafile: Metafile): string {
  const roots = new Set<string>();
  for (const input of Object.keys(metafile.inputs)) {
    const parts = input.split(/[/\\]/);
    const i = parts.lastIndexOf('node_modules');
    if (i < 0) continue;
    const scoped = parts[i + 1]!.startsWith('@');
    roots.add(parts.slice(0, i + (scoped ? 3 : 2)).join(sep));
  }
  const entries = [...roots].map((dir) => {
    const pkg = JSON.parse(readFileSync(join(ROOT, dir, 'package.json'), 'utf8')) as { name: string; version: string; license?: string };
    const file = readdirSync(join(ROOT, dir)).sort().find((n) => /^(licen[cs]e|copying)/i.test(n));
    const text = file && existsSync(join(ROOT, dir, file)) ? readFileSync(join(ROOT, dir, file), 'utf8').trim() : '(no licence file in the package)';
    return { id: `${pkg.name}@${pkg.version}`, license: pkg.license ?? 'UNKNOWN', text };
  });
  const unique = new Map(entries.map((e) => [e.id, e]));
  const sorted = [...unique.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return (
    `Third-party software bundled into build/ by npm run build (${sorted.length} packages)\n\n` +
    sorted.map((e) => `${'='.repeat(72)}\n${e.id} (${e.license})\n${'='.repeat(72)}\n${e.text}\n`).join('\n')
  );
}

await main(process.argv.slice(2));
