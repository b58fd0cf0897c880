/** How raven starts its own processes (lab control plane, agents, the L7 proxy): this Node binary and the repository's bin/raven.mjs (which loads the TypeScript sources). */
import { fileURLToPath } from 'node:url';

export function ravenCommand(): [string, string] {
  return [process.execPath, fileURLToPath(new URL('../../bin/raven.mjs', import.meta.url))];
}
