/**
 * The cdk8s app (`cdk8s synth`): compiles every topologies/*.yaml into $CDK8S_OUTDIR (default dist),
 * exactly as `raven synth topologies/*.yaml --out dist` does. The raw route: cdk8s-cli deletes
 * $CDK8S_OUTDIR before it starts this app, so invalid input leaves no output folder at all.
 * `npm run synth` runs `raven synth` itself, which leaves dist/ untouched then.
 */
import { main } from './cli.js';

const outdir = process.env.CDK8S_OUTDIR ?? 'dist';
process.exitCode = await main(['synth', 'topologies', '--out', outdir], {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
});
