/**
 * The `raven` process: the command line on this process's arguments and standard streams. The
 * build's entry point (build/raven.js); bin/raven.mjs runs it, or these sources through tsx in a
 * checkout whose build is missing or older than src/.
 */
import { main } from './cli.js';

process.exitCode = await main(process.argv.slice(2), {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
});
