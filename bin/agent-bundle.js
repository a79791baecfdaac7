// The agent as deployed runs from one bundle, build/agent.js (scripts/build-agent.mjs builds
// it with esbuild): its code and every dependency it imports in one ES module, whitespace and
// comments out, ASCII only. Loaded as some 890 modules from their sources, the agent keeps
// every module's whole source in V8 (comments, indentation, and a whole file two bytes a
// character once one character in it is above Latin-1) and a module record for each: an idle
// agent alone holds 96 MiB RSS from its sources, 87 from the bundle (bench/agent-memory.ts).
// The check costs a start about 30 ms (890 stats).
//
// The bundle is only used while it is what its sources would build now: the build writes a
// manifest beside it (build/agent.inputs.json) with the size and modification time of every
// file it read, and of the bundle itself. Anything changed since, and the agent runs from its
// sources, as it did before the bundle existed, saying so on stderr; `npm run build:agent`,
// `lab up` and `npm ci` build it again. Plain JavaScript: the entry shim reads it before it
// loads any TypeScript.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
/** Where the bundle and its manifest are, relative to the repository. */
export const AGENT_BUNDLE_PATH = 'build/agent.js';
export const AGENT_MANIFEST_PATH = 'build/agent.inputs.json';

/** What the manifest records of one file: [size in bytes, modification time in ms]; undefined when it is missing. */
export function fileStamp(path) {
  try {
    const stat = statSync(path);
    return stat.isFile() ? [stat.size, stat.mtimeMs] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The manifest of a bundle built from `inputs` (paths relative to `root`): written after the
 * bundle itself, so a bundle replaced under it never passes for current.
 */
export function agentManifest(root, inputs, bundlePath = AGENT_BUNDLE_PATH) {
  const manifest = { bundle: [bundlePath, fileStamp(join(root, bundlePath))], inputs: {} };
  for (const input of inputs) {
    const stamp = fileStamp(join(root, input));
    if (stamp === undefined) throw new Error(`${input}: read by the build, now missing`);
    manifest.inputs[input] = stamp;
  }
  return manifest;
}

/**
 * Undefined when the bundle under `root` is current (every file it was built from is as it
 * was, and so is the bundle); else why it is not, in words for an operator.
 */
export function agentBundleStaleness(root = REPO_ROOT, manifestPath = AGENT_MANIFEST_PATH) {
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(join(root, manifestPath), 'utf8'));
  } catch (err) {
    return err?.code === 'ENOENT' ? `${manifestPath} is missing` : `${manifestPath} is unreadable`;
  }
  const [bundlePath, bundleStamp] = Array.isArray(manifest?.bundle) ? manifest.bundle : [];
  if (typeof bundlePath !== 'string' || manifest.inputs === null || typeof manifest.inputs !== 'object')
    return `${manifestPath} is not a manifest`;
  const same = (path, stamp) => {
    const now = fileStamp(join(root, path));
    return now !== undefined && Array.isArray(stamp) && now[0] === stamp[0] && now[1] === stamp[1];
  };
  if (!same(bundlePath, bundleStamp)) return `${bundlePath} is not the one its manifest describes`;
  for (const [path, stamp] of Object.entries(manifest.inputs)) {
    if (!same(path, stamp)) return `${path} changed since ${bundlePath} was built`;
  }
  return undefined;
}

/**
 * Stamps the manifest under `root` again with its files' times as they are now, for a tree
 * whose files were copied as they were built, found current, then all given one time
 * (scripts/image.sh: image layers keep times to the second at best). Refuses when a file's
 * size is not the one recorded.
 */
export function restampAgentManifest(root, manifestPath = AGENT_MANIFEST_PATH) {
  const manifest = JSON.parse(readFileSync(join(root, manifestPath), 'utf8'));
  const [bundlePath, [bundleSize]] = manifest.bundle;
  for (const [path, [size]] of [[bundlePath, [bundleSize]], ...Object.entries(manifest.inputs)]) {
    if (fileStamp(join(root, path))?.[0] !== size)
      throw new Error(`cannot stamp ${manifestPath} again: ${path} is not the file the bundle was built from`);
  }
  writeFileSync(
    join(root, manifestPath),
    `${JSON.stringify(agentManifest(root, Object.keys(manifest.inputs), bundlePath))}\n`,
  );
}
