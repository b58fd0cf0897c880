/**
 * Golden files: the bundle of each example is committed and must not change unnoticed.
 * `UPDATE_GOLDEN=1 npm test` rewrites test/golden/; `npm run synth` rewrites dist/.
 */
import { basename } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeTree } from '../../src/compiler/files.ts';
import { diffTrees, mustCompile, readTree, topologyFiles } from '../support/support.ts';

for (const file of topologyFiles('test/fixtures/good')) {
  const name = basename(file, '.yaml');
  test(`${file} compiles to its golden bundle`, () => {
    const actual = mustCompile([file]);
    if (process.env.UPDATE_GOLDEN) writeTree(`test/golden/${name}`, actual);
    const diff = diffTrees(readTree(`test/golden/${name}`), actual);
    assert.is(diff, '', `golden files differ (UPDATE_GOLDEN=1 npm test to accept):\n${diff}`);
  });
}

test('the committed dist/ is exactly what topologies/ compiles to', () => {
  const diff = diffTrees(readTree('dist'), mustCompile(topologyFiles()));
  assert.is(diff, '', `dist/ is stale; run \`npm run synth\` and commit dist/:\n${diff}`);
});

test.run();
