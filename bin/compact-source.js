// One module's source made small for V8 to keep, its lines kept.
//
// V8 keeps every module's source text in the heap for as long as the process lives (it
// compiles functions lazily, from the source, on first call), and stores a whole source two
// bytes a character as soon as one character in it is above Latin-1: a `²` in a comment of
// @noble/curves, a `≥` in a zod error message, a `…` in undici. The agent loads about 1,000
// modules, 7.1 MiB of source in V8's terms; compacted, 3.2 MiB.
//
// What changes: comments go; whitespace between two tokens becomes the line breaks it held,
// else one space where two tokens would otherwise run together, else nothing; a character
// above Latin-1 in a string, a regular expression, a name or an untagged template becomes its
// escape. Every token keeps its line, so a stack trace names the same line as the file on
// disk (columns move); line breaks between tokens stay, so automatic semicolon insertion
// reads the program as before. A tagged template keeps its characters: its tag sees the raw
// text. Parsing is acorn's; what it cannot parse is left as it is.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
/** Loaded on the first module to compact: a start that finds every module in the cache never loads it. */
let acorn;
let loadingAcorn = false;

/**
 * Loads acorn if it is not loaded yet; false while it is being loaded. Acorn's own modules
 * come through the loader's hook that compacts, and cannot be compacted by it: the hook
 * passes them through as they are.
 */
export function compactorReady() {
  if (acorn !== undefined) return true;
  if (loadingAcorn) return false;
  loadingAcorn = true;
  try {
    acorn = require('acorn');
  } finally {
    loadingAcorn = false;
  }
  return true;
}

/** Characters of names, keywords and numbers: two such tokens need a space between them. */
const WORD = /[\w$\\\u0080-\uffff]/;
/** Characters of operators: two such tokens need one too (`a + +b`, `a - -b`, `x / /re/`). */
const OPERATOR = /[+\-*/%<>=!&|^~?.:#@]/;
const LINE_BREAKS = /\r\n?|[\n\u2028\u2029]/g;
const ABOVE_LATIN1 = /[\u0100-\uffff]/;

/** Whether a token ending in `last` and the next, starting with `first`, would read differently without a space. */
function apart(previousToken, last, first) {
  if (WORD.test(last)) return WORD.test(first) || first === '.'; // `1 .toString()`
  // A regular expression's flags would run on into a name: `/a/ in x`.
  if (previousToken.type === acorn.tokTypes.regexp) return WORD.test(first);
  return OPERATOR.test(last) && OPERATOR.test(first);
}

function lineBreaks(text) {
  return text.match(LINE_BREAKS)?.length ?? 0;
}

/**
 * `text` (one token) with every character above Latin-1 written as an escape. `astral` says how
 * a character beyond the BMP is written: as `\u{…}` (strings, names, templates, /u and /v
 * expressions) or as its two surrogates (expressions without /u, which match code units).
 */
function escapeAboveLatin1(text, astral) {
  let out = '';
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (code <= 0xff) {
      out += ch;
      continue;
    }
    // An identity escape (`\é`) becomes the escape itself, not a backslash before one.
    let backslashes = 0;
    for (let i = out.length - 1; i >= 0 && out[i] === '\\'; i--) backslashes++;
    if (backslashes % 2 === 1) out = out.slice(0, -1);
    if (code > 0xffff && astral === 'code-point') out += `\\u{${code.toString(16)}}`;
    else for (let i = 0; i < ch.length; i++) out += `\\u${ch.charCodeAt(i).toString(16).padStart(4, '0')}`;
  }
  return out;
}

/**
 * `source` compacted (see above), or undefined when acorn cannot parse it as `sourceType`
 * ('module' or 'script', a CommonJS module's body).
 */
export function compactSource(source, sourceType) {
  if (!compactorReady()) return undefined;
  const tt = acorn.tokTypes;
  const tokens = [];
  try {
    acorn.parse(source, {
      ecmaVersion: 'latest',
      sourceType,
      allowHashBang: true,
      allowReturnOutsideFunction: sourceType === 'script',
      allowAwaitOutsideFunction: sourceType === 'module',
      onToken: tokens,
    });
  } catch {
    return undefined;
  }
  /** Open templates, innermost last: whether tagged, and the braces open inside its `${`. */
  const templates = [];
  let out = '';
  let end = 0;
  let previous;
  for (const token of tokens) {
    if (token.type === tt.eof) break;
    const gap = source.slice(end, token.start);
    let text = source.slice(token.start, token.end);
    const breaks = lineBreaks(gap);
    if (breaks > 0) out += '\n'.repeat(breaks);
    else if (gap.length > 0 && previous && apart(previous, out[out.length - 1], text[0])) out += ' ';

    const template = templates.at(-1);
    if (token.type === tt.backQuote) {
      if (template && template.braces < 0) templates.pop();
      // After a token that can end an expression, a template is a tag's argument.
      else templates.push({ tagged: !(previous === undefined || previous.type.beforeExpr), braces: -1 });
    } else if (token.type === tt.dollarBraceL && template) template.braces = 0;
    else if (token.type === tt.braceL && template && template.braces >= 0) template.braces++;
    else if (token.type === tt.braceR && template && template.braces >= 0) template.braces--;

    if (ABOVE_LATIN1.test(text)) {
      if (token.type === tt.template || token.type === tt.invalidTemplate) {
        if (!template?.tagged) text = escapeAboveLatin1(text, 'code-point');
      } else if (token.type === tt.regexp) {
        text = escapeAboveLatin1(text, /[uv]/.test(token.value.flags) ? 'code-point' : 'surrogates');
      } else text = escapeAboveLatin1(text, 'code-point');
    }
    out += text;
    end = token.end;
    previous = token;
  }
  return out + '\n'.repeat(lineBreaks(source.slice(end)));
}
