// Config validation with zod, with errors an operator can read: one line per problem,
// naming the field path ("overlay.listen[1]: expected string").
import type { z } from 'zod';

export class ConfigError extends Error {
  readonly issues: string[];
  constructor(source: string, issues: string[]) {
    super(`invalid ${source}:\n  - ${issues.join('\n  - ')}`);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export function formatIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => {
    const path = issue.path
      .map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
      .join('');
    return path ? `${path}: ${issue.message}` : issue.message;
  });
}

/** Parses `input` with `schema`, or throws a ConfigError that names `source` and every issue. */
export function parseConfig<S extends z.ZodType>(schema: S, input: unknown, source: string): z.infer<S> {
  const result = schema.safeParse(input);
  if (!result.success) throw new ConfigError(source, formatIssues(result.error));
  return result.data;
}
