// Writes a benchmark run as JSON, a markdown table and an SVG bar chart under
// bench/results/<date>/.
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

export interface Table {
  title: string;
  columns: string[];
  rows: Array<Array<string | number>>;
  notes?: string[];
}

export interface Bar {
  label: string;
  value: number;
}

export function machineDescription(): string {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  return `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux, Node ${process.versions.node}`;
}

function cell(v: string | number): string {
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return '–';
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);
}

export function markdownTable(t: Table): string {
  const lines = [`### ${t.title}`, '', `| ${t.columns.join(' | ')} |`, `|${t.columns.map(() => '---').join('|')}|`];
  for (const row of t.rows) lines.push(`| ${row.map(cell).join(' | ')} |`);
  for (const n of t.notes ?? []) lines.push('', n);
  return `${lines.join('\n')}\n`;
}

export function barChartSvg(title: string, unit: string, bars: readonly Bar[]): string {
  const width = 720;
  const rowH = 28;
  const left = 260;
  const max = Math.max(...bars.map((b) => (Number.isFinite(b.value) ? b.value : 0)), 1e-9);
  const height = 50 + bars.length * rowH;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const rows = bars.map((b, i) => {
    const y = 40 + i * rowH;
    const v = Number.isFinite(b.value) ? b.value : 0;
    const w = ((width - left - 90) * v) / max;
    return (
      `<text x="${left - 8}" y="${y + 17}" text-anchor="end">${esc(b.label)}</text>` +
      `<rect x="${left}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" fill="#3b82f6"/>` +
      `<text x="${left + w + 6}" y="${y + 17}">${cell(b.value)} ${esc(unit)}</text>`
    );
  });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="13">` +
    `<rect width="100%" height="100%" fill="white"/>` +
    `<text x="10" y="24" font-size="15" font-weight="bold">${esc(title)}</text>${rows.join('')}</svg>\n`
  );
}

export async function writeResults(
  dir: string,
  data: unknown,
  tables: readonly Table[],
  charts: ReadonlyArray<{ file: string; svg: string }>,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'results.json'), `${JSON.stringify(data, null, 2)}\n`);
  const md = [`# edgemesh-cni benchmark, ${new Date().toISOString()}`, '', `Machine: ${machineDescription()}`, ''];
  for (const t of tables) md.push(markdownTable(t));
  for (const c of charts) md.push(`![${c.file}](${c.file})`, '');
  await writeFile(join(dir, 'results.md'), md.join('\n'));
  for (const c of charts) await writeFile(join(dir, c.file), c.svg);
  return dir;
}
