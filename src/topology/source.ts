/**
 * Reading a topology file safely: bytes → text → one YAML document with source positions.
 *
 * Pure: takes the bytes, returns data plus a way to map a data path back to line:col.
 * Hostile input (binary, huge, alias bombs, deep nesting, duplicate keys, tabs) becomes a
 * diagnostic, never an exception, in time and memory bounded by the file size limit.
 */
import {
  Alias,
  Document,
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Pair,
  parseAllDocuments,
  type YAMLMap,
  type Node as YamlNode,
} from 'yaml';
import { type Diagnostic, type PathSegment, quote } from './diagnostics.js';
import { fastLoad } from './fast-load.js';

/** Topology files are small (a 1,000-region file is ~0.5 MiB); anything larger is a mistake or an attack. */
export const MAX_FILE_BYTES = 8 * 1024 * 1024;
/** Nesting this deep never occurs in a topology; the YAML composer recurses per level. */
export const MAX_NESTING = 64;
/** Anchors are allowed for reuse, but not for exponential expansion. */
export const MAX_ALIAS_COUNT = 100;

export interface Position {
  readonly line: number;
  readonly col: number;
}

export interface SourceDocument {
  readonly file: string;
  /** The document as plain JSON-compatible data. */
  readonly data: unknown;
  /** Position of the value at `path`, or of the nearest existing ancestor. */
  locate(path: readonly PathSegment[]): Position;
  /** Position of the key naming `path`'s last segment (for unknown/misspelt fields). */
  locateKey(path: readonly PathSegment[]): Position;
}

export type ParseResult =
  | { readonly ok: true; readonly doc: SourceDocument }
  | { readonly ok: false; readonly diagnostics: readonly Diagnostic[] };

export function parseSource(file: string, bytes: Uint8Array): ParseResult {
  const fail = (message: string, pos: Position = { line: 1, col: 1 }): ParseResult => ({
    ok: false,
    diagnostics: [{ file, ...pos, severity: 'error', path: '', message }],
  });

  if (bytes.length === 0) return fail('file is empty; expected a Topology document (see topologies/ for examples)');
  if (bytes.length > MAX_FILE_BYTES) {
    return fail(`file is ${bytes.length} bytes, above the ${MAX_FILE_BYTES}-byte limit for a topology; split it per cluster`);
  }
  const nul = bytes.indexOf(0);
  if (nul >= 0) return fail('file is binary (contains a NUL byte), not YAML text', positionOfByte(bytes, nul));
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return fail('file is not valid UTF-8 text; save it as UTF-8');
  }
  // Line by line: one regex over the whole text backtracks exponentially on leading blank lines.
  if (text.trim() === '' || text.split(/\r\n|\r|\n/).every((l) => /^\s*(#.*)?$/.test(l))) {
    return fail('file has no content (only blanks or comments); expected a Topology document');
  }

  const tooDeep = findExcessiveNesting(text);
  if (tooDeep) return fail(`nesting deeper than ${MAX_NESTING} levels; a topology never needs this`, tooDeep);

  // Fast path: well-formed files without aliases load with js-yaml; positions are computed only if
  // a finding needs one. Everything else (errors, aliases) goes through the position-keeping parser,
  // which is the reference for every message.
  if (!ALIAS_TOKEN.test(text) && !YAML_DIRECTIVE.test(text)) {
    const fast = fastLoad(text);
    if (fast.ok && fast.data !== null && typeof fast.data === 'object') {
      let slow: ParseResult | undefined;
      const positions = (): SourceDocument | undefined => {
        slow ??= parseWithPositions(file, text);
        return slow.ok ? slow.doc : undefined;
      };
      return {
        ok: true,
        doc: {
          file,
          data: fast.data,
          locate: (path) => positions()?.locate(path) ?? { line: 1, col: 1 },
          locateKey: (path) => positions()?.locateKey(path) ?? { line: 1, col: 1 },
        },
      };
    }
  }
  return parseWithPositions(file, text);
}

/** An alias (`*name`) at a token boundary: such files take the parser that bounds alias expansion. */
const ALIAS_TOKEN = /(^|[\s[{,])\*[^\s,[\]{}]/m;

/** A `%YAML` directive: js-yaml ignores the version it declares, so such files take the reference parser. */
const YAML_DIRECTIVE = /^%YAML\b/m;

/** The reference parser: `yaml` with source positions, duplicate keys and alias limits checked. */
function parseWithPositions(file: string, text: string): ParseResult {
  const fail = (message: string, pos: Position = { line: 1, col: 1 }): ParseResult => ({
    ok: false,
    diagnostics: [{ file, ...pos, severity: 'error', path: '', message }],
  });
  const lineCounter = new LineCounter();
  const at = (offset: number): Position => {
    const p = lineCounter.linePos(offset);
    return { line: p.line, col: p.col };
  };

  let docs: Document.Parsed[];
  try {
    // uniqueKeys is checked below in linear time: the parser's own check is quadratic in a mapping's size.
    docs = parseAllDocuments(text, { lineCounter, uniqueKeys: false, prettyErrors: false, strict: true }) as Document.Parsed[];
  } catch (err) {
    return fail(`failed to parse YAML: ${describe(err)}`);
  }
  if (!Array.isArray(docs)) return fail('file has no YAML document');

  const diagnostics: Diagnostic[] = [];
  for (const d of docs) {
    for (const e of d.errors) {
      diagnostics.push({ file, ...at(e.pos[0]), severity: 'error', path: '', message: yamlErrorMessage(e.code, e.message) });
    }
    for (const offset of duplicateKeyOffsets(d)) {
      diagnostics.push({ file, ...at(offset), severity: 'error', path: '', message: yamlErrorMessage('DUPLICATE_KEY', '') });
    }
    // YAML 1.1 reads `yes` as true and `0777` as 511; the fast path would read them as 1.2 does.
    if (d.directives?.yaml.explicit && d.directives.yaml.version !== '1.2') {
      const offset = Math.max(0, text.search(YAML_DIRECTIVE));
      diagnostics.push({ file, ...at(offset), severity: 'error', path: '', message: `the file declares YAML ${d.directives.yaml.version}, whose scalars (yes, 0777) read differently; topologies are YAML 1.2: remove the %YAML line` });
    }
    for (const t of tagProblems(d, text)) diagnostics.push({ file, ...at(t.offset), severity: 'error', path: '', message: t.message });
  }
  if (diagnostics.length > 0) return { ok: false, diagnostics: dedupeByLine(diagnostics) };

  const content = docs.filter((d) => d.contents !== null);
  if (content.length === 0) return fail('file has no content; expected a Topology document');
  if (content.length > 1) {
    const second = content[1]!;
    return fail('file holds several YAML documents; put one Topology per file', at(second.range[0]));
  }
  const doc = content[0]!;

  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    const msg = describe(err);
    if (/alias/i.test(msg)) {
      return fail(`too many alias expansions (limit ${MAX_ALIAS_COUNT}); this looks like an alias bomb: ${msg}`);
    }
    return fail(`failed to read YAML: ${msg}`);
  }

  // Pairs by key, per mapping, built on first use: a linear search per lookup is quadratic when
  // a hostile file has thousands of unknown fields, each reported and located.
  const pairIndex = new WeakMap<object, Map<string, Pair>>();
  const pairOf = (map: YAMLMap, seg: PathSegment): Pair | undefined => {
    let index = pairIndex.get(map);
    if (!index) {
      index = new Map();
      for (const p of map.items) {
        if (isPair(p) && isScalar(p.key) && !index.has(String(p.key.value))) index.set(String(p.key.value), p);
      }
      pairIndex.set(map, index);
    }
    return index.get(String(seg));
  };

  const locateNode = (path: readonly PathSegment[], wantKey: boolean): Position => {
    let node: unknown = doc.contents;
    let best: Position = node && hasRange(node) ? at(node.range[0]) : { line: 1, col: 1 };
    for (let i = 0; i < path.length; i++) {
      const seg = path[i]!;
      if (isAlias(node)) node = (node as Alias).resolve(doc);
      if (isMap(node)) {
        const pair = pairOf(node, seg);
        if (!pair) return best;
        const last = i === path.length - 1;
        if (last && wantKey && hasRange(pair.key)) return at(pair.key.range[0]);
        node = pair.value;
        if (hasRange(pair.key)) best = at(pair.key.range[0]);
      } else if (isSeq(node) && typeof seg === 'number') {
        node = node.items[seg];
      } else {
        return best;
      }
      if (node && hasRange(node)) best = at(node.range[0]);
    }
    return best;
  };

  return {
    ok: true,
    doc: {
      file,
      data,
      locate: (path) => locateNode(path, false),
      locateKey: (path) => locateNode(path, true),
    },
  };
}

/** Offsets of keys repeated in the same mapping (scalar keys compared by value, like the parser does). */
function duplicateKeyOffsets(doc: Document.Parsed): number[] {
  const offsets: number[] = [];
  // Iterative: the tree may be as deep as the parser managed before giving up.
  const stack: unknown[] = [doc.contents];
  while (stack.length > 0) {
    const node = stack.pop();
    if (isMap(node)) {
      const seen = new Set<unknown>();
      for (const pair of node.items) {
        if (isScalar(pair.key)) {
          if (seen.has(pair.key.value) && hasRange(pair.key)) offsets.push(pair.key.range[0]);
          seen.add(pair.key.value);
        } else stack.push(pair.key);
        stack.push(pair.value);
      }
    } else if (isSeq(node)) {
      for (const item of node.items) stack.push(item);
    } else if (isPair(node)) {
      stack.push(node.key, node.value);
    }
  }
  return offsets;
}

/**
 * The tags a topology may carry: YAML 1.2 core types and the non-specific `!` (a string). Anything
 * else (`!Ref`, `!!python/object`, `!!binary`, `!!set`, `!!timestamp`) would be resolved to something
 * else or dropped silently by one parser or another: it is an error, at the tag.
 */
const CORE_TAGS = new Set(['!', ...['str', 'int', 'float', 'bool', 'null', 'seq', 'map'].map((t) => `tag:yaml.org,2002:${t}`)]);

function tagProblems(doc: Document.Parsed, text: string): { offset: number; message: string }[] {
  const found = new Map<number, string>();
  const tagAt = (offset: number): string => /^\S*/.exec(text.slice(offset, offset + 200))![0];
  // A tag that does not fit its node (`!!map x`) is a warning of the parser's; where it is, the tag is.
  for (const w of doc.warnings) {
    if (w.code === 'TAG_RESOLVE_FAILED') {
      found.set(w.pos[0], tagMessage(tagAt(w.pos[0])));
    }
  }
  const stack: unknown[] = [doc.contents];
  while (stack.length > 0) {
    const node = stack.pop();
    if (isPair(node)) {
      stack.push(node.key, node.value);
      continue;
    }
    if (!node || typeof node !== 'object') continue;
    if (isMap(node) || isSeq(node)) for (const item of node.items) stack.push(item);
    const tag = (node as { tag?: string }).tag;
    if (tag === undefined || CORE_TAGS.has(tag) || !hasRange(node)) continue;
    // The node's range starts after its properties: the tag is the last "!" token before it.
    const bang = text.lastIndexOf('!', node.range[0] - 1);
    let start = bang;
    while (start > 0 && !/\s/.test(text[start - 1]!)) start--;
    if (bang < 0 || found.has(start)) continue;
    found.set(start, tagMessage(tagAt(start)));
  }
  return [...found].map(([offset, message]) => ({ offset, message }));
}

function tagMessage(tag: string): string {
  if (/^!!(str|int|float|bool|null|seq|map)$/.test(tag)) {
    return `YAML tag ${quote(tag)} does not fit its value; remove the tag (a topology is plain strings, numbers, booleans, lists and mappings)`;
  }
  return `unknown YAML tag ${quote(tag)}; a topology is plain data and tags such as !Ref are never resolved: remove the tag, quoting the value if it is a string`;
}

function hasRange(n: unknown): n is YamlNode & { range: [number, number, number] } {
  return typeof n === 'object' && n !== null && Array.isArray((n as { range?: unknown }).range);
}

function positionOfByte(bytes: Uint8Array, offset: number): Position {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset; i++) {
    if (bytes[i] === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, col: offset - lineStart + 1 };
}

/**
 * Finds the first place where flow brackets or block indentation nest deeper than MAX_NESTING.
 * A cheap linear scan that skips quoted strings and comments; it runs before the recursive parser.
 */
function findExcessiveNesting(text: string): Position | undefined {
  let depth = 0;
  let line = 1;
  let col = 0;
  let quote: string | null = null;
  let comment = false;
  let atLineStart = true;
  let indent = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    col++;
    if (c === '\n') {
      line++;
      col = 0;
      comment = false;
      atLineStart = true;
      indent = 0;
      if (quote === "'") continue; // single-quoted scalars may span lines
      continue;
    }
    if (atLineStart) {
      if (c === ' ' || c === '-' || c === '?' || c === ':') {
        indent++;
        // Block nesting costs at least one column per level; 2 columns per level is the norm.
        if (indent > MAX_NESTING * 4) return { line, col };
        continue;
      }
      atLineStart = false;
    }
    if (comment) continue;
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = null;
      continue;
    }
    // Quotes and comments start only at a token boundary: `it's` or `a#b` is part of a plain
    // scalar, and treating it as a quote or comment would hide the brackets that follow.
    const prev = col > 1 ? text[i - 1]! : ' ';
    if ((c === '"' || c === "'") && /[\s[{,:]/.test(prev)) quote = c;
    else if (c === '#' && /\s/.test(prev)) comment = true;
    else if (c === '[' || c === '{') {
      if (++depth > MAX_NESTING) return { line, col };
    } else if (c === ']' || c === '}') depth = Math.max(0, depth - 1);
  }
  return undefined;
}

function yamlErrorMessage(code: string, message: string): string {
  const first = message.split('\n')[0]!.replace(/ at line \d+, column \d+.*$/, '');
  switch (code) {
    case 'DUPLICATE_KEY':
      return 'duplicate key in a mapping; each key may appear once, remove or merge the repeated one';
    case 'RESOURCE_EXHAUSTION':
      return `nesting too deep to parse (${first}); a topology never needs this, flatten the document`;
    case 'TAB_AS_INDENT':
      return 'tab used for indentation; YAML allows only spaces, replace tabs with spaces';
    default:
      return `YAML syntax error: ${first}`;
  }
}

/** Parser errors often cascade on the same line; keep the first per line. */
function dedupeByLine(ds: Diagnostic[]): Diagnostic[] {
  const seen = new Set<number>();
  return ds.filter((d) => (seen.has(d.line) ? false : (seen.add(d.line), true)));
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message.split('\n')[0]! : String(err);
}

