// The per-lab state file, `.lab/<id>/state.json` under the repository (gitignored). Every
// namespace, process and file is recorded BEFORE it is created, so `lab down` can remove
// all of it even after the process that built the lab crashed or was killed.
import { mkdir, readdir, readFile, rename, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tryRun } from '../common/exec.ts';
import { deleteNetns, listNetns } from '../common/netns.ts';

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
export const LABS_DIR = join(REPO_ROOT, '.lab');

export interface RecordedProcess {
  name: string;
  pid: number;
  /** Kernel start time (/proc/<pid>/stat field 22): a recycled pid never matches it. */
  startTime: string;
  netns?: string;
}

export interface RecordedPod {
  name: string;
  node: string;
  netns: string;
  containerId: string;
  ips: string[];
}

export interface LabStateData {
  id: string;
  prefix: string;
  dir: string;
  createdAt: string;
  phase: 'building' | 'up' | 'failed' | 'tearing-down';
  namespaces: string[];
  processes: RecordedProcess[];
  files: string[];
  pods: RecordedPod[];
  /** Anything the lab wants to find again later (topology, API server URL...). */
  info: Record<string, unknown>;
}

/** Reads /proc/<pid>/stat's start time, or null when the process is gone. */
export async function processStartTime(pid: number): Promise<string | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

export class LabState {
  readonly data: LabStateData;
  private writing: Promise<void> = Promise.resolve();

  private constructor(data: LabStateData) {
    this.data = data;
  }

  get file(): string {
    return join(this.data.dir, 'state.json');
  }

  static async create(id: string, prefix: string, dir = join(LABS_DIR, id)): Promise<LabState> {
    const state = new LabState({
      id,
      prefix,
      dir,
      createdAt: new Date().toISOString(),
      phase: 'building',
      namespaces: [],
      processes: [],
      files: [dir],
      pods: [],
      info: {},
    });
    await mkdir(dir, { recursive: true });
    await state.save();
    return state;
  }

  static async load(dirOrId: string): Promise<LabState> {
    const dir = dirOrId.includes('/') ? dirOrId : join(LABS_DIR, dirOrId);
    let text: string;
    try {
      text = await readFile(join(dir, 'state.json'), 'utf8');
    } catch {
      throw new Error(`no lab at ${dir} (no state.json): is the lab up? (\`edgemesh-cni lab status\`)`);
    }
    return new LabState(JSON.parse(text) as LabStateData);
  }

  /** Every lab with a state file under .lab/, oldest first. */
  static async all(): Promise<LabState[]> {
    const entries = await readdir(LABS_DIR).catch(() => [] as string[]);
    const labs: LabState[] = [];
    for (const e of entries) {
      try {
        labs.push(await LabState.load(join(LABS_DIR, e)));
      } catch {
        // a directory without a state file is not a lab
      }
    }
    return labs.sort((a, b) => a.data.createdAt.localeCompare(b.data.createdAt));
  }

  /** Writes the state atomically (tmp + rename); writes are serialised. */
  save(): Promise<void> {
    const text = `${JSON.stringify(this.data, null, 2)}\n`;
    const tmp = `${this.file}.tmp`;
    this.writing = this.writing.then(async () => {
      await writeFile(tmp, text);
      await rename(tmp, this.file);
    });
    return this.writing;
  }

  async recordNamespaces(names: string[]): Promise<void> {
    for (const n of names) if (!this.data.namespaces.includes(n)) this.data.namespaces.push(n);
    await this.save();
  }

  async recordFile(path: string): Promise<void> {
    if (!this.data.files.includes(path)) this.data.files.push(path);
    await this.save();
  }

  async recordProcess(p: RecordedProcess): Promise<void> {
    this.data.processes.push(p);
    await this.save();
  }

  async recordPod(p: RecordedPod): Promise<void> {
    this.data.pods = this.data.pods.filter((q) => q.name !== p.name);
    this.data.pods.push(p);
    await this.save();
  }

  async setPhase(phase: LabStateData['phase']): Promise<void> {
    this.data.phase = phase;
    await this.save();
  }

  async setInfo(key: string, value: unknown): Promise<void> {
    this.data.info[key] = value;
    await this.save();
  }
}

/** Kills a recorded process if (and only if) it is still the same process. */
export async function killRecorded(p: RecordedProcess, graceMs = 3000): Promise<void> {
  if ((await processStartTime(p.pid)) !== p.startTime) return;
  try {
    process.kill(p.pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if ((await processStartTime(p.pid)) !== p.startTime) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    // gone meanwhile
  }
}

/**
 * Removes everything a state file lists: processes (same pid AND start time only),
 * namespaces (with whatever still runs inside), then files. Never throws.
 */
export async function cleanupState(state: LabState): Promise<{ namespaces: string[]; processes: number }> {
  await state.setPhase('tearing-down').catch(() => {});
  const alive = state.data.processes;
  await Promise.all(alive.map((p) => killRecorded(p)));
  const existing = new Set(await listNetns());
  const doomed = state.data.namespaces.filter((n) => existing.has(n));
  await Promise.all([...doomed].reverse().map((n) => deleteNetns(n)));
  // Anything the lab's prefix names that escaped the record (a crash between record and create).
  for (const n of await listNetns()) {
    if (n.startsWith(state.data.prefix) && state.data.prefix.length >= 4) await tryRun('ip', ['netns', 'del', n]);
  }
  for (const f of [...state.data.files].reverse()) await rm(f, { recursive: true, force: true }).catch(() => {});
  // The last lab also takes the .lab/ directory with it (fails harmlessly while others exist).
  await rmdir(LABS_DIR).catch(() => {});
  return { namespaces: doomed, processes: alive.length };
}
