// How the agent's loader compacts a module (bin/compact-source.js): the same program, token for
// token and line for line, with no comments, less whitespace and every character above
// Latin-1 escaped except in tagged templates.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import * as acorn from 'acorn';
import { describe, expect, it } from 'vitest';
import { compactSource } from '../../../bin/compact-source.js';

const ROOT = join(import.meta.dirname, '../../..');
const require = createRequire(join(ROOT, 'package.json'));

/** Every token's kind, value and line (a regular expression's pattern only where it was plain). */
function tokens(source: string, sourceType: 'module' | 'script') {
  const out: unknown[] = [];
  acorn.parse(source, {
    ecmaVersion: 'latest',
    sourceType,
    allowHashBang: true,
    allowReturnOutsideFunction: sourceType === 'script',
    allowAwaitOutsideFunction: sourceType === 'module',
    locations: true,
    onToken: (t) => {
      const raw = (t as acorn.Token & { value?: unknown }).value;
      const value = t.type === acorn.tokTypes.regexp ? (raw as { flags: string }).flags : raw;
      out.push([t.type.label, value, t.loc!.start.line]);
    },
  });
  return out;
}

function jsFiles(dir: string, limit: number, found: string[] = []): string[] {
  for (const name of readdirSync(dir).sort()) {
    if (found.length >= limit) break;
    const path = join(dir, name);
    if (name === 'node_modules' || name.startsWith('.')) continue;
    if (statSync(path).isDirectory()) jsFiles(path, limit, found);
    else if (/\.(c|m)?js$/.test(name)) found.push(path);
  }
  return found;
}

/** Runs a script's source and returns its completion value. */
const run = (source: string) => runInNewContext(source, {});

describe('compactSource', () => {
  it('keeps every token, its value and its line, in the modules the agent loads', { timeout: 120_000 }, () => {
    const dirs: [string, 'module' | 'script', number][] = [
      [join(ROOT, 'node_modules/zod/v4'), 'module', 60],
      [join(ROOT, 'node_modules/@noble/curves'), 'module', 20],
      [join(ROOT, 'node_modules/@libp2p/utils/dist/src'), 'module', 30],
      [join(ROOT, 'node_modules/undici/lib'), 'script', 60],
      [join(require.resolve('js-yaml'), '../..'), 'module', 10],
    ];
    let files = 0;
    let before = 0;
    let after = 0;
    for (const [dir, sourceType, limit] of dirs) {
      for (const file of jsFiles(dir, limit)) {
        const source = readFileSync(file, 'utf8');
        const type = file.endsWith('.cjs') ? 'script' : file.endsWith('.mjs') ? 'module' : sourceType;
        const compacted = compactSource(source, type);
        if (compacted === undefined) continue; // not this kind of module
        expect(tokens(compacted, type), file).toEqual(tokens(source, type));
        expect(compacted.split('\n').length, file).toBe(source.split('\n').length);
        files++;
        before += source.length * (/[\u0100-\uffff]/.test(source) ? 2 : 1);
        after += compacted.length * (/[\u0100-\uffff]/.test(compacted) ? 2 : 1);
      }
    }
    expect(files).toBeGreaterThan(120);
    // What V8 keeps of them: well under two thirds.
    expect(after).toBeLessThan(before * 0.66);
  });

  it('runs as the original does where tokens would merge or a line break ends a statement', () => {
    const cases = [
      'let a = 1, b = 2; a + +b',
      'let a = 1, b = 2; a - -b',
      'let a = 5; a++ + ++a',
      'let x = 8, y = 2, z = 2; x / y / z',
      'function f() { return /a b/.source } f()',
      '1 .toString() + 2..toFixed(1)',
      'let a = 1\nlet b = a\n;(b + 1)',
      'function g() { return\n 42 } g()',
      'let i = 0; i\n++\ni; i',
      '"a" in {a: 1} && typeof void 0',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the source text of a template
      '`x${ {a: `y${1 + 1}`}.a }z`',
      '/* a comment */ 1 /* and */ + // another\n 2',
      'let c = 0; for (const k of [1, 2]) c += k; c',
      'class A { #p = 1; has(o) { return #p in o } } new A().has(new A())',
    ];
    for (const source of cases) {
      const compacted = compactSource(source, 'script');
      expect(compacted, source).toBeDefined();
      expect(run(compacted!), source).toEqual(run(source));
    }
    expect(compactSource('let a = 1, b = 2; a + +b', 'script')).toBe('let a=1,b=2;a+ +b');
  });

  it('escapes characters above Latin-1, and leaves what a tag reads raw', () => {
    const cases = [
      "'≥ ü 😀'",
      '"\\≥"',
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the source text of a template
      '`≥ ${1} 😀`',
      '/≥+/.test("≥≥")',
      '/😀/u.test("😀")',
      '/^.😀$/.test("x😀")',
      '[/[😀]/u.test("😀"), /[😀]/u.test("\\ud83d")]',
      'let π = 3; π',
      'let \\u03c0x = 1; πx',
      '"café"',
    ];
    for (const source of cases) {
      const compacted = compactSource(source, 'script')!;
      expect(compacted, source).not.toMatch(/[\u0100-\uffff]/);
      expect(run(compacted), source).toEqual(run(source));
    }
    // A tagged template's tag sees the raw text: it is kept as written.
    const tagged = 'String.raw`≥ \\n`';
    expect(compactSource(tagged, 'script')).toBe(tagged);
    expect(run(compactSource(tagged, 'script')!)).toBe('≥ \\n');
    expect(compactSource('(x => x)`≥`', 'script')).toContain('≥');
  });

  it('keeps a module a module, and gives up on what it cannot parse', () => {
    expect(compactSource('export const a = 1; // done\n', 'module')).toBe('export const a=1;\n');
    expect(compactSource('export const a = 1;', 'script')).toBeUndefined();
    expect(compactSource('let = ;', 'module')).toBeUndefined();
    expect(compactSource('#!/usr/bin/env node\nconsole.log(1)\n', 'module')).toBe('\nconsole.log(1)\n');
  });
});
