// Structural-schema handling of custom resources, as kube-apiserver does with a CRD's
// openAPIV3Schema: unknown fields are pruned (or refused with fieldValidation=Strict),
// null values of non-nullable fields are dropped, and type/enum/required/pattern/bounds
// violations are a 422 Invalid listing every offending field.
import type { StatusCause } from './errors.ts';

export type JsonSchema = {
  type?: string;
  properties?: Record<string, JsonSchema>;
  additionalProperties?: JsonSchema | boolean;
  items?: JsonSchema;
  required?: string[];
  enum?: unknown[];
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: boolean;
  exclusiveMaximum?: boolean;
  minItems?: number;
  maxItems?: number;
  minProperties?: number;
  maxProperties?: number;
  nullable?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-int-or-string'?: boolean;
};

export type SchemaResult = {
  /** The object with unknown fields and non-nullable nulls removed. */
  value: unknown;
  /** Dotted paths of fields the schema does not know. */
  unknown: string[];
  causes: StatusCause[];
};

function typeOf(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (v === null) return 'null';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function typeMatches(schema: JsonSchema, v: unknown): boolean {
  const actual = typeOf(v);
  if (schema['x-kubernetes-int-or-string']) return actual === 'integer' || actual === 'string';
  if (!schema.type) return true;
  if (schema.type === 'number') return actual === 'number' || actual === 'integer';
  return schema.type === actual;
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function walk(schema: JsonSchema, value: unknown, path: string, out: SchemaResult): unknown {
  if (!typeMatches(schema, value)) {
    out.causes.push({
      reason: 'FieldValueTypeInvalid',
      field: path,
      message: `Invalid value: "${typeOf(value)}": ${path} in body must be of type ${schema['x-kubernetes-int-or-string'] ? 'integer or string' : schema.type}: "${typeOf(value)}"`,
    });
    return value;
  }
  if (schema.enum && !schema.enum.some((e) => JSON.stringify(e) === JSON.stringify(value))) {
    out.causes.push({
      reason: 'FieldValueNotSupported',
      field: path,
      message: `Unsupported value: ${JSON.stringify(value)}: supported values: ${schema.enum.map((e) => JSON.stringify(String(e))).join(', ')}`,
    });
  }
  if (typeof value === 'string') {
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value)) {
      out.causes.push({
        field: path,
        message: `Invalid value: "${value}": ${path} in body should match '${schema.pattern}'`,
      });
    }
    if (schema.minLength !== undefined && value.length < schema.minLength) {
      out.causes.push({
        field: path,
        message: `Invalid value: "${value}": ${path} in body should be at least ${schema.minLength} chars long`,
      });
    }
    if (schema.maxLength !== undefined && value.length > schema.maxLength) {
      out.causes.push({
        reason: 'FieldValueTooLong',
        field: path,
        message: `Too long: may not be more than ${schema.maxLength} bytes`,
      });
    }
  }
  if (typeof value === 'number') {
    const { minimum, maximum } = schema;
    if (minimum !== undefined && (schema.exclusiveMinimum ? value <= minimum : value < minimum)) {
      out.causes.push({
        field: path,
        message: `Invalid value: ${value}: ${path} in body should be greater than or equal to ${minimum}`,
      });
    }
    if (maximum !== undefined && (schema.exclusiveMaximum ? value >= maximum : value > maximum)) {
      out.causes.push({
        field: path,
        message: `Invalid value: ${value}: ${path} in body should be less than or equal to ${maximum}`,
      });
    }
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) {
      out.causes.push({
        field: path,
        message: `Invalid value: ${value.length}: ${path} in body should have at least ${schema.minItems} items`,
      });
    }
    if (schema.maxItems !== undefined && value.length > schema.maxItems) {
      out.causes.push({
        reason: 'FieldValueTooMany',
        field: path,
        message: `Too many: ${value.length}: must have at most ${schema.maxItems} items`,
      });
    }
    const items = schema.items;
    return items ? value.map((v, i) => walk(items, v, `${path}[${i}]`, out)) : value;
  }
  if (typeOf(value) === 'object') return walkObject(schema, value as Record<string, unknown>, path, out);
  return value;
}

function walkObject(schema: JsonSchema, obj: Record<string, unknown>, path: string, out: SchemaResult): unknown {
  const result: Record<string, unknown> = {};
  const props = schema.properties ?? {};
  const additional = typeof schema.additionalProperties === 'object' ? schema.additionalProperties : undefined;
  const preserve = schema['x-kubernetes-preserve-unknown-fields'] === true || schema.additionalProperties === true;
  for (const [key, v] of Object.entries(obj)) {
    const child = props[key] ?? additional;
    if (v === null && !(child?.nullable ?? false) && !(child === undefined && preserve)) continue;
    if (child) result[key] = walk(child, v, join(path, key), out);
    else if (preserve) result[key] = v;
    else out.unknown.push(join(path, key));
  }
  for (const key of schema.required ?? []) {
    if (result[key] === undefined)
      out.causes.push({ reason: 'FieldValueRequired', field: join(path, key), message: 'Required value' });
  }
  const count = Object.keys(result).length;
  if (schema.minProperties !== undefined && count < schema.minProperties) {
    out.causes.push({
      field: path,
      message: `Invalid value: ${count}: ${path} in body should have at least ${schema.minProperties} properties`,
    });
  }
  if (schema.maxProperties !== undefined && count > schema.maxProperties) {
    out.causes.push({
      reason: 'FieldValueTooMany',
      field: path,
      message: `Too many: ${count}: must have at most ${schema.maxProperties} items`,
    });
  }
  return result;
}

/**
 * Validates and prunes a custom resource against its version's openAPIV3Schema.
 * apiVersion, kind and metadata are the server's business and always kept.
 */
export function applySchema(schema: JsonSchema, obj: Record<string, unknown>): SchemaResult {
  const out: SchemaResult = { value: undefined, unknown: [], causes: [] };
  const { apiVersion, kind, metadata, ...rest } = obj;
  const rootProps = { ...(schema.properties ?? {}) };
  delete rootProps.apiVersion;
  delete rootProps.kind;
  delete rootProps.metadata;
  const body = walkObject(
    { ...schema, properties: rootProps, required: (schema.required ?? []).filter((k) => k !== 'metadata') },
    rest,
    '',
    out,
  ) as Record<string, unknown>;
  out.value = { apiVersion, kind, metadata, ...body };
  return out;
}
