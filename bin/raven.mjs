#!/usr/bin/env node
// Entry point of the `raven` command: runs the compiled build, build/raven.js (`npm run build`), with
// plain node. In a checkout (src/ beside build/) whose build is missing or older than a source file,
// package.json or the installed dependencies, it runs the TypeScript sources through tsx instead (a
// devDependency), so an edit takes effect before the next build. It prints nothing of its own unless
// neither can run.
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const built = join(root, 'build', 'raven.js');
const sources = join(root, 'src');

/** Modification time in ms, or undefined when the path does not exist. */
function mtime(path) {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** The newest modification time of dir and everything under it (a folder's changes when an entry is added or removed). */
function newest(dir) {
  let t = statSync(dir).mtimeMs;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

function buildIsCurrent() {
  const b = mtime(built);
  if (b === undefined) return false;
  if (mtime(sources) === undefined) return true; // not a checkout: build/ is all there is
  const inputs = [newest(sources), mtime(join(root, 'package.json')) ?? 0, mtime(join(root, 'node_modules', '.package-lock.json')) ?? 0];
  return inputs.every((t) => t <= b);
}

if (buildIsCurrent()) {
  await import(pathToFileURL(built).href);
} else {
  let register;
  try {
    if (mtime(sources) === undefined) throw new Error('no sources');
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write(`raven: ${built} is missing or older than the sources, and there is no tsx or no src/ to run instead: run npm run build\n`);
    process.exit(1);
  }
  register();
  await import(pathToFileURL(join(sources, 'raven.ts')).href);
}
