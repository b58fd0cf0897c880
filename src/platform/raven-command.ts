/**
 * How raven starts its own processes (lab control plane, agents, the L7 proxy): this Node binary and
 * the entry of the code that is running. From the build (build/*.js, one flat folder), that is
 * build/raven.js beside it, so compiled code only ever starts compiled code; from the sources (tests
 * under tsx), bin/raven.mjs, which runs the build when it is up to date.
 */
import { fileURLToPath } from 'node:url';

export function ravenCommand(): [string, string] {
  const fromSources = import.meta.url.endsWith('.ts');
  const entry = fromSources ? new URL('../../bin/raven.mjs', import.meta.url) : new URL('./raven.js', import.meta.url);
  return [process.execPath, fileURLToPath(entry)];
}
