/**
 * The runner behind `npm test` and `npm run test:unit`: uvu over test/, one file after another,
 * then an exit with uvu's verdict. Whatever a suite left open (a half-closed socket, a timer, a
 * child's pipe) is named on stderr and does not keep the process, and CI with it, waiting for ever
 * after the last total (seen: a socket in CLOSE_WAIT held a finished run for an hour).
 *
 *   node --import tsx scripts/test.ts [PATTERN]   (default: every *.test.ts)
 */
import { parse } from 'uvu/parse';
import { run } from 'uvu/run';

const pattern = new RegExp(process.argv[2] ?? '\\.test\\.ts$');
const ctx = await parse('test', pattern, { cwd: process.cwd() });
await run(ctx.suites, { bail: false });
const open = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap');
if (open.length) {
  const counts = new Map<string, number>();
  for (const r of open) counts.set(r, (counts.get(r) ?? 0) + 1);
  process.stderr.write(`test run over; still open, and not waited for: ${[...counts].map(([r, n]) => `${n} ${r}`).join(', ')}\n`);
}
process.exit(process.exitCode ?? 0);
