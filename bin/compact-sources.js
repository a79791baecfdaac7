// Every module the agent loads, compacted once and kept on disk: its TypeScript stripped of
// types, and every module (its own and its dependencies') compacted (./compact-source.js), so
// a start after the first loads neither Node's type stripper nor Node's compile cache, and V8
// keeps less than half the source it would.
//
// Node strips types with a WebAssembly build of swc that, once loaded, stays for the life of
// the process (about 10 MB of an idle agent's RSS). Node's own compile cache avoids that on
// later starts, but it keeps every entry it read — each module's stripped source and V8 code
// cache — in the C++ heap for good: about 3 MB of an idle agent (`node bench/agent-memory.ts`:
// 107.5 → 104.1 MiB). This hook keeps only the compacted sources, one file per source text
// (named by the SHA-256 of the transform, the kind of module and the text, under a directory
// per Node version, since the stripper comes with Node), and hands them to the loader:
// nothing stays in memory but what V8 keeps for any module. The price is V8 compiling the
// modules again at each start (no code cache), and a first start that compacts about 1,000
// modules (some seconds of CPU, once per release on a node); measured in docs/decisions.md
// ("Memory, idle and with many Nodes").
//
// Plain JavaScript: the entry shim installs it before it loads any TypeScript.
import { createHash } from 'node:crypto';
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { registerHooks, stripTypeScriptTypes } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compactorReady, compactSource } from './compact-source.js';

const DAY_MS = 24 * 60 * 60 * 1000;
/** Entries no start has used for this long are removed (old releases' sources). */
const STALE_AFTER_MS = 7 * DAY_MS;
/** When the process prunes: by then start-up has loaded every module it loads. */
const PRUNE_AFTER_MS = 60_000;
/** Part of every entry's name: a change to what ./compact-source.js writes needs a new one. */
const TRANSFORM = 'compact-1';

let cacheDir;
/** The entries this process read or wrote (kept fresh, never pruned). */
const used = new Set();
/**
 * What the hook did, for tests and the start-up log: entries found, modules compacted (and
 * stripped) now, entries that could not be written, modules acorn could not parse (loaded as they are).
 */
export const compactSourceCounts = { hits: 0, compacted: 0, unwritable: 0, unparsed: 0 };

/** The cache directory: EDGEMESH_SOURCE_CACHE, else edgemesh-source-cache in the temporary directory. */
function compactSourceDir(env = process.env) {
  return join(env.EDGEMESH_SOURCE_CACHE || join(tmpdir(), 'edgemesh-source-cache'), process.version);
}

/** A real directory (no symlink), owned by this user, writable by nobody else. */
function privateDir(path) {
  try {
    const st = lstatSync(path);
    return st.isDirectory() && st.uid === process.getuid?.() && (st.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

function strip(source) {
  // The experimental warning would reach every operator's log on a first start.
  const { emitWarning } = process;
  process.emitWarning = () => {};
  try {
    return stripTypeScriptTypes(source, { mode: 'strip' });
  } finally {
    process.emitWarning = emitWarning;
  }
}

/**
 * `source` as V8 should get it: from the cache, else transformed (`kind` 'ts': stripped, then
 * compacted as a module; 'module' or 'script': compacted) and kept for the next start.
 */
function cached(source, kind) {
  const name = `${createHash('sha256').update(`${TRANSFORM}\0${kind}\0`).update(source).digest('hex')}.js`;
  const file = join(cacheDir, name);
  used.add(name);
  try {
    const js = readFileSync(file, 'utf8');
    compactSourceCounts.hits++;
    // Mark it used (for pruning), at most once a day per entry.
    try {
      if (Date.now() - statSync(file).mtimeMs > DAY_MS) utimesSync(file, new Date(), new Date());
    } catch {}
    return js;
  } catch {
    // Not there yet (or unreadable): transform it and keep it for the next start.
  }
  const plain = kind === 'ts' ? strip(source) : source;
  // Acorn's own modules, while the first miss loads it: as they are, and not kept.
  if (!compactorReady()) return plain;
  let js = compactSource(plain, kind === 'script' ? 'script' : 'module');
  // A require()d ES module (Node had not named its format yet).
  if (js === undefined && kind === 'script') js = compactSource(plain, 'module');
  if (js === undefined) {
    compactSourceCounts.unparsed++;
    js = plain;
  }
  compactSourceCounts.compacted++;
  // Several agents (the lab's) may write one entry at once: each writes its own file and renames it.
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, js, { mode: 0o600 });
    renameSync(tmp, file);
  } catch {
    compactSourceCounts.unwritable++;
    try {
      unlinkSync(tmp);
    } catch {}
  }
  return js;
}

const decoder = new TextDecoder();

/**
 * Loads every `file:` module through the cache: TypeScript (.ts) read and stripped here,
 * JavaScript (ES modules and CommonJS) as Node's loader found it; JSON, WebAssembly, addons
 * and Node's own modules pass untouched. A minute later it removes the entries no start has
 * used for a week. False, and nothing installed, where this Node has no registerHooks or the
 * directory cannot be made or is not private: Node then loads as usual.
 */
export function installCompactSources(dir = compactSourceDir()) {
  if (typeof registerHooks !== 'function' || typeof stripTypeScriptTypes !== 'function') return false;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch {
    return false;
  }
  // The agent runs what it finds here as its own code: under a shared temporary directory
  // anyone could have made the directory first and planted a module. Only a directory of
  // this user's that nobody else can write to is used; else Node loads as usual.
  if (!privateDir(dir) || !privateDir(dirname(dir))) return false;
  cacheDir = dir;
  registerHooks({
    load(url, context, nextLoad) {
      if (!url.startsWith('file:')) return nextLoad(url, context);
      if (url.endsWith('.ts'))
        return { format: 'module', source: cached(readFileSync(fileURLToPath(url), 'utf8'), 'ts'), shortCircuit: true };
      const loaded = nextLoad(url, context);
      // A require()d file comes without a format until Node has read it: CommonJS unless it parses only as a module.
      if (
        loaded.source == null ||
        !(loaded.format === 'module' || loaded.format === 'commonjs' || loaded.format === undefined)
      )
        return loaded;
      const source = typeof loaded.source === 'string' ? loaded.source : decoder.decode(loaded.source);
      return { ...loaded, source: cached(source, loaded.format === 'module' ? 'module' : 'script') };
    },
  });
  setTimeout(() => pruneCompactSources(), PRUNE_AFTER_MS).unref();
  return true;
}

/** Removes entries no start has used for STALE_AFTER_MS; returns how many. A no-op when the hook is not installed. */
export function pruneCompactSources(now = Date.now()) {
  if (cacheDir === undefined) return 0;
  let removed = 0;
  let names = [];
  try {
    names = readdirSync(cacheDir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (used.has(name)) continue;
    try {
      if (now - statSync(join(cacheDir, name)).mtimeMs < STALE_AFTER_MS) continue;
      unlinkSync(join(cacheDir, name));
      removed++;
    } catch {}
  }
  return removed;
}
