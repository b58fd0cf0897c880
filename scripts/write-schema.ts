// Writes schema/topology.schema.json from src/topology/schema.ts (the source of truth).
import { writeFileSync } from 'node:fs';
import { topologySchema } from '../src/topology/schema.ts';

writeFileSync('schema/topology.schema.json', JSON.stringify(topologySchema, null, 2) + '\n');
console.log('wrote schema/topology.schema.json');
