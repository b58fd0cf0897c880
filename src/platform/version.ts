/**
 * The release version, read once from package.json. The build inlines it (esbuild bundles the JSON
 * import), so build/ needs no package.json beside it.
 */
import pkg from '../../package.json' with { type: 'json' };

export const VERSION: string = pkg.version;
