// Files other programs read while the agent may crash at any instant (the CNI conflist the
// runtime reads, the client binary it executes, the node key): write a temporary file in
// the same directory, fsync it, rename over the target, fsync the directory. A reader sees
// the old file or the new one, never half of one.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  // A dot-prefixed name: container runtimes ignore hidden files in the CNI conf dir.
  const tmp = join(dir, `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.chmod(mode); // the umask may have narrowed the mode given to open()
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Writes only when the content differs, so a restart does not touch files a runtime watches. */
export async function writeFileAtomicIfChanged(
  path: string,
  data: string | Uint8Array,
  mode = 0o644,
): Promise<boolean> {
  const current = await readFile(path).catch(() => undefined);
  const next = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data);
  if (current?.equals(next)) return false;
  await writeFileAtomic(path, next, mode);
  return true;
}
