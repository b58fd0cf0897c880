/** The editor-facing JSON Schema file is current, and every example validates against it as an editor would. */
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { topologySchema } from '../../src/topology/schema.ts';
import { topologyFiles } from '../support/support.ts';

const shipped = JSON.parse(readFileSync('schema/topology.schema.json', 'utf8'));

test('schema/topology.schema.json is generated from src/topology/schema.ts (run `npm run schema`)', () => {
  assert.equal(shipped, JSON.parse(JSON.stringify(topologySchema)));
});

test('every example declares the schema for yaml-language-server and validates against it', () => {
  const validate = new Ajv({ strict: false }).compile(shipped);
  for (const file of topologyFiles()) {
    const text = readFileSync(file, 'utf8');
    assert.match(text, /^# yaml-language-server: \$schema=\.\.\/schema\/topology\.schema\.json$/m, file);
    assert.ok(validate(parse(text)), `${file}: ${JSON.stringify(validate.errors)}`);
  }
});

test.run();
