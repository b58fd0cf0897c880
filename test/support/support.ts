/** Shared test helpers: compile files, read objects back from a file tree, compare trees. */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { compile, type CompileResult } from '../../src/compiler/compile.ts';
import type { FileTree } from '../../src/compiler/bundle.ts';

export function compileFiles(paths: readonly string[]): CompileResult {
  return compile(paths.map((path) => ({ path, bytes: readFileSync(path) })));
}

export function mustCompile(paths: readonly string[]): FileTree {
  const r = compileFiles(paths);
  if (!r.files) throw new Error(`expected ${paths.join(', ')} to compile:\n${r.diagnostics.map((d) => `${d.file}:${d.line}:${d.col}: ${d.message}`).join('\n')}`);
  return r.files;
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: any;
  [key: string]: any;
}

/** Every object in every YAML file of the tree except kustomization.yaml, with its file. */
export function objectsOf(files: FileTree): { file: string; obj: K8sObject }[] {
  const out: { file: string; obj: K8sObject }[] = [];
  for (const [file, content] of files) {
    if (file.endsWith('kustomization.yaml')) continue;
    for (const doc of parseAllDocuments(content)) {
      if (doc.errors.length) throw new Error(`${file}: ${doc.errors[0]!.message}`);
      out.push({ file, obj: doc.toJS() as K8sObject });
    }
  }
  return out;
}

export function topologyFiles(dir = 'topologies'): string[] {
  return readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort().map((f) => join(dir, f));
}

/** Reads a directory into a FileTree (relative paths, sorted). */
export function readTree(dir: string): FileTree {
  const files: FileTree = new Map();
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else files.set(relative(dir, p), readFileSync(p, 'utf8'));
    }
  };
  walk(dir);
  return files;
}

/** Human-readable difference of two trees, or '' when identical. */
export function diffTrees(expected: FileTree, actual: FileTree): string {
  const lines: string[] = [];
  for (const f of expected.keys()) if (!actual.has(f)) lines.push(`missing: ${f}`);
  for (const f of actual.keys()) if (!expected.has(f)) lines.push(`unexpected: ${f}`);
  for (const [f, content] of actual) {
    const want = expected.get(f);
    if (want === undefined || want === content) continue;
    const a = want.split('\n');
    const b = content.split('\n');
    const i = a.findIndex((line, n) => line !== b[n]);
    lines.push(`differs: ${f} at line ${i + 1}:\n  expected: ${a[i]}\n  actual:   ${b[i]}`);
  }
  return lines.join('\n');
}
