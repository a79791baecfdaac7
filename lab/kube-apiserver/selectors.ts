// Label and field selectors with the grammar of k8s.io/apimachinery/pkg/labels and
// pkg/fields: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, comma = AND.
import { badRequest } from './errors.ts';

type Requirement =
  | { key: string; op: 'eq' | 'ne'; values: [string] }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'exists' | 'notexists'; values: [] };

export type Selector = (fields: Record<string, string | undefined>) => boolean;

const KEY = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?\/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$/;
const VALUE = /^([a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?)?$/;

/** Splits on commas that are not inside a `( ... )` value set. */
function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '(') depth++;
    else if (ch === ')') depth--;
    else if (ch === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

function parseRequirement(term: string, what: string): Requirement {
  const setMatch = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(term);
  if (setMatch) {
    const values = setMatch[3]!
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v.length > 0);
    return checked({ key: setMatch[1]!, op: setMatch[2] as 'in' | 'notin', values }, what, term);
  }
  const cmp = /^([^=!\s]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
  if (cmp) {
    const op = cmp[2] === '!=' ? 'ne' : 'eq';
    return checked({ key: cmp[1]!, op, values: [cmp[3]!.trim()] }, what, term);
  }
  if (term.startsWith('!')) return checked({ key: term.slice(1).trim(), op: 'notexists', values: [] }, what, term);
  return checked({ key: term, op: 'exists', values: [] }, what, term);
}

function checked(req: Requirement, what: string, term: string): Requirement {
  if (what === 'label') {
    if (!KEY.test(req.key))
      throw badRequest(`unable to parse requirement: invalid label key "${req.key}" in "${term}"`);
    for (const v of req.values) {
      if (!VALUE.test(v) || v.length > 63) throw badRequest(`invalid label value: "${v}" in "${term}"`);
    }
  } else if (req.op !== 'eq' && req.op !== 'ne') {
    throw badRequest(`invalid field selector "${term}": only =, == and != are supported`);
  }
  return req;
}

function matches(req: Requirement, fields: Record<string, string | undefined>): boolean {
  const value = fields[req.key];
  switch (req.op) {
    case 'eq':
      return value === req.values[0];
    case 'ne':
      return value !== req.values[0];
    case 'in':
      return value !== undefined && req.values.includes(value);
    case 'notin':
      return value === undefined || !req.values.includes(value);
    case 'exists':
      return value !== undefined;
    case 'notexists':
      return value === undefined;
  }
}

function compile(
  text: string | null | undefined,
  what: 'label' | 'field',
  allowedKeys?: ReadonlySet<string>,
): Selector {
  if (!text || text.trim() === '') return () => true;
  const reqs = splitTopLevel(text).map((t) => parseRequirement(t, what));
  if (allowedKeys) {
    for (const r of reqs) {
      if (!allowedKeys.has(r.key)) throw badRequest(`field label not supported: ${r.key}`);
    }
  }
  return (fields) => reqs.every((r) => matches(r, fields));
}

export function parseLabelSelector(text: string | null | undefined): Selector {
  return compile(text, 'label');
}

export function parseFieldSelector(text: string | null | undefined, allowedKeys: ReadonlySet<string>): Selector {
  return compile(text, 'field', allowedKeys);
}
