// The agent's TypeScript, stripped once and kept on disk, so a start after the first loads
// neither Node's type stripper nor Node's compile cache.
//
// Node strips types with a WebAssembly build of swc that, once loaded, stays for the life of
// the process (about 10 MB of an idle agent's RSS). Node's own compile cache avoids that on
// later starts, but it keeps every entry it read — each module's stripped source and V8 code
// cache — in the C++ heap for good: about 3 MB of an idle agent (`node bench/agent-memory.ts`:
// 107.5 → 104.1 MiB). This hook keeps only the stripped sources, one file per source text
// (named by its SHA-256, under a directory per Node version, since the stripper comes with
// Node), and hands them to the loader as plain modules: nothing stays in memory but what V8
// keeps for any module. The price is V8 compiling the modules again at each start (no code
// cache); measured in docs/decisions.md ("Memory, idle and with many Nodes").
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

const DAY_MS = 24 * 60 * 60 * 1000;
/** Entries no start has used for this long are removed (old releases' sources). */
const STALE_AFTER_MS = 7 * DAY_MS;
/** When the process prunes: by then start-up has loaded every module it loads. */
const PRUNE_AFTER_MS = 60_000;

let cacheDir;
/** The entries this process read or wrote (kept fresh, never pruned). */
const used = new Set();
/** What the hook did, for tests and the start-up log. */
export const strippedSourceCounts = { hits: 0, stripped: 0, unwritable: 0 };

/** The cache directory: EDGEMESH_SOURCE_CACHE, else edgemesh-source-cache in the temporary directory. */
function strippedSourceDir(env = process.env) {
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

function loadStripped(path) {
  const source = readFileSync(path, 'utf8');
  const name = `${createHash('sha256').update(source).digest('hex')}.js`;
  const file = join(cacheDir, name);
  used.add(name);
  try {
    const js = readFileSync(file, 'utf8');
    strippedSourceCounts.hits++;
    // Mark it used (for pruning), at most once a day per entry.
    try {
      if (Date.now() - statSync(file).mtimeMs > DAY_MS) utimesSync(file, new Date(), new Date());
    } catch {}
    return js;
  } catch {
    // Not there yet (or unreadable): strip it and keep it for the next start.
  }
  const js = strip(source);
  strippedSourceCounts.stripped++;
  // Several agents (the lab's) may write one entry at once: each writes its own file and renames it.
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, js, { mode: 0o600 });
    renameSync(tmp, file);
  } catch {
    strippedSourceCounts.unwritable++;
    try {
      unlinkSync(tmp);
    } catch {}
  }
  return js;
}

/**
 * Loads every `file:` URL ending in .ts from the cache (stripping and storing what is not
 * there), and a minute later removes the entries no start has used for a week. False, and nothing installed, where this Node has no registerHooks or the
 * directory cannot be made: Node then strips as usual.
 */
export function installStrippedSources(dir = strippedSourceDir()) {
  if (typeof registerHooks !== 'function' || typeof stripTypeScriptTypes !== 'function') return false;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch {
    return false;
  }
  // The agent runs what it finds here as its own code: under a shared temporary directory
  // anyone could have made the directory first and planted a module. Only a directory of
  // this user's that nobody else can write to is used; else Node strips as usual.
  if (!privateDir(dir) || !privateDir(dirname(dir))) return false;
  cacheDir = dir;
  registerHooks({
    load(url, context, nextLoad) {
      if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
      return { format: 'module', source: loadStripped(fileURLToPath(url)), shortCircuit: true };
    },
  });
  setTimeout(() => pruneStrippedSources(), PRUNE_AFTER_MS).unref();
  return true;
}

/** Removes entries no start has used for STALE_AFTER_MS; returns how many. A no-op when the hook is not installed. */
export function pruneStrippedSources(now = Date.now()) {
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
