/** The generated bundles build with a real kustomize (kubectl's), exactly as Argo CD and Flux build them. */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAllDocuments } from 'yaml';
import { mustCompile, objectsOf, topologyFiles } from '../support/support.ts';

const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;
const expected = objectsOf(mustCompile(topologyFiles())).filter((o) => !o.file.includes('/bootstrap/') && !o.file.startsWith('argocd-'));

if (!kubectl) {
  console.warn('kubectl not found: kustomize build test not run');
} else {
  for (const cluster of readdirSync('dist').filter((d) => !d.endsWith('.yaml')).sort()) {
    test(`kubectl kustomize dist/${cluster} yields every object of the cluster's three layers`, () => {
      const r = spawnSync('kubectl', ['kustomize', `dist/${cluster}`], { encoding: 'utf8' });
      assert.is(r.status, 0, r.stderr);
      const built = parseAllDocuments(r.stdout).map((d) => d.toJS()).map((o) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`).sort();
      const want = expected.filter((o) => o.file.startsWith(`${cluster}/`)).map(({ obj: o }) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`).sort();
      assert.equal(built, want);
    });
  }
}

test.run();
