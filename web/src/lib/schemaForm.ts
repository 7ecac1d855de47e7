// A form from a task's params JSON schema (pydantic's model_json_schema): one field per
// property, typed by the schema; what the user types is turned back into params here, and
// every rule beyond "is it a number" is left to the server (POST /tasks/{task}/validate),
// whose messages are shown next to the fields.

export interface JsonSchema {
  type?: string | string[];
  title?: string;
  description?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  items?: JsonSchema;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  $ref?: string;
  $defs?: Record<string, JsonSchema>;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
}

/** "scalar": a union of a number and named values (epochs: 1..100 or "auto"). */
export type FieldKind = "text" | "integer" | "number" | "boolean" | "choice" | "list" | "json"
  | "scalar";

export interface FieldSpec {
  name: string;
  title: string;
  description: string;
  kind: FieldKind;
  required: boolean;
  /** The param may be null (an empty input sends nothing: the server's default). */
  nullable: boolean;
  default: unknown;
  choices: string[];
  min: number | undefined;
  max: number | undefined;
  step: string | undefined;
}

/** What the inputs hold: text for most fields, a flag for booleans. */
export type FormValues = Record<string, string | boolean>;

function resolve(node: JsonSchema, root: JsonSchema): JsonSchema {
  let cur = node;
  for (let depth = 0; cur.$ref && depth < 16; depth += 1) {
    const name = cur.$ref.replace(/^#\/\$defs\//, "");
    const target = root.$defs?.[name];
    if (!target) break;
    cur = { ...target, ...cur, $ref: undefined };
  }
  if (cur.allOf?.length === 1 && cur.allOf[0]) {
    cur = { ...resolve(cur.allOf[0], root), ...cur, allOf: undefined };
  }
  return cur;
}

function kindOf(node: JsonSchema): FieldKind {
  if (node.enum && node.enum.every((v) => typeof v === "string")) return "choice";
  const type = Array.isArray(node.type) ? node.type.find((t) => t !== "null") : node.type;
  switch (type) {
    case "string":
      return "text";
    case "integer":
      return "integer";
    case "number":
      return "number";
    case "boolean":
      return "boolean";
    case "array":
      return node.items && ["string", "integer", "number"].includes(String(node.items.type))
        ? "list" : "json";
    default:
      return "json";
  }
}

/** The fields of a params schema, in the schema's order. */
export function fieldsOf(schema: JsonSchema): FieldSpec[] {
  const required = new Set(schema.required ?? []);
  return Object.entries(schema.properties ?? {}).map(([name, raw]) => {
    let node = resolve(raw, schema);
    let nullable = false;
    const variants = node.anyOf ?? node.oneOf;
    if (variants) {
      const nonNull = variants.filter((v) => v.type !== "null");
      nullable = nonNull.length < variants.length;
      if (nonNull.length === 1 && nonNull[0]) {
        node = { ...resolve(nonNull[0], schema), title: node.title,
          description: node.description, default: node.default };
      }
    }
    let kind = variants && node.anyOf ? "json" : kindOf(node);
    let choices: string[] = kind === "choice" ? (node.enum as string[]) : [];
    const nonNull = (node.anyOf ?? []).map((v) => resolve(v, schema)).filter((v) => v.type !== "null");
    const numeric = nonNull.find((v) => v.type === "integer" || v.type === "number");
    if (kind === "json" && nonNull.length > 1 && numeric
        && nonNull.every((v) => ["integer", "number", "string"].includes(String(v.type)))) {
      kind = "scalar";
      choices = nonNull.flatMap((v) => v.const !== undefined ? [String(v.const)]
        : (v.enum ?? []).map(String));
      node = { ...node, minimum: numeric.minimum, maximum: numeric.maximum,
        exclusiveMinimum: numeric.exclusiveMinimum, exclusiveMaximum: numeric.exclusiveMaximum };
    }
    const min = node.minimum ?? node.exclusiveMinimum;
    const max = node.maximum ?? node.exclusiveMaximum;
    return {
      name,
      title: node.title ?? name,
      description: node.description ?? "",
      kind,
      required: required.has(name),
      nullable,
      default: node.default,
      choices,
      min,
      max,
      step: kind === "integer" ? "1" : kind === "number" ? "any" : undefined,
    };
  });
}

function asInput(field: FieldSpec, value: unknown): string | boolean {
  if (field.kind === "boolean") return value === true;
  if (value === undefined || value === null) return "";
  if (field.kind === "list" && Array.isArray(value)) return value.join("\n");
  if (field.kind === "json") return JSON.stringify(value);
  return String(value);
}

/** The inputs' starting values: each field's default. */
export function initialValues(fields: FieldSpec[]): FormValues {
  return Object.fromEntries(fields.map((f) => [f.name, asInput(f, f.default)]));
}

/** Inputs with values from ``params`` (e.g. a job to run again) over the defaults. */
export function valuesFromParams(fields: FieldSpec[], params: Record<string, unknown>,
): FormValues {
  const values = initialValues(fields);
  for (const f of fields) if (f.name in params) values[f.name] = asInput(f, params[f.name]);
  return values;
}

export interface Conversion {
  params: Record<string, unknown>;
  /** Inputs that are not even the right kind of value (per field name). */
  errors: Record<string, string>;
}

function sameAsDefault(field: FieldSpec, value: unknown): boolean {
  return JSON.stringify(value) === JSON.stringify(field.default ?? null);
}

/** The params to send: typed values of the inputs that differ from the defaults (so a
 *  job's spec records what the user chose). An empty optional input sends nothing. */
export function paramsOf(fields: FieldSpec[], values: FormValues): Conversion {
  const params: Record<string, unknown> = {};
  const errors: Record<string, string> = {};
  for (const f of fields) {
    const raw = values[f.name];
    let value: unknown;
    if (f.kind === "boolean") {
      value = raw === true;
    } else {
      const text = typeof raw === "string" ? raw.trim() : "";
      if (text === "") {
        if (f.required) errors[f.name] = "Required.";
        continue;
      }
      switch (f.kind) {
        case "integer":
          value = /^-?\d+$/.test(text) ? Number(text) : undefined;
          if (value === undefined) errors[f.name] = "Enter a whole number.";
          break;
        case "number":
          value = Number.isFinite(Number(text)) ? Number(text) : undefined;
          if (value === undefined) errors[f.name] = "Enter a number.";
          break;
        case "scalar":
          // A number when it reads as one; otherwise one of the named values, as typed.
          value = /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text;
          break;
        case "list":
          value = text.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
          break;
        case "json":
          try {
            value = JSON.parse(text);
          } catch {
            errors[f.name] = "Enter JSON.";
          }
          break;
        default:
          value = text;
      }
    }
    if (value !== undefined && !(errors[f.name]) && (f.required || !sameAsDefault(f, value))) {
      params[f.name] = value;
    }
  }
  return { params, errors };
}

/** Server field errors ("files.2" -> "files") grouped per top-level field; "" for the
 *  params as a whole. */
export function errorsByField(errors: { field: string; message: string }[],
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of errors) {
    const top = e.field.split(".")[0] ?? "";
    // Several messages for one field: each branch of a union, or several list items.
    out[top] = out[top] ? `${out[top]} / ${e.message}` : e.message;
  }
  return out;
}

/** Params that name a file of the input dataset holding code or settings. */
export const FILE_PARAMS: Record<string, { label: string; suggested: string }> = {
  params_file: { label: "Settings file (config.py, .json or .yaml)", suggested: "config.py" },
  preprocess_file: { label: "Preprocessing code", suggested: "preprocess.py" },
  script: { label: "Training script", suggested: "train.py" },
};

/** A task's params schema as a settings file (params_file) sees it: the file overrides
 *  what the form sets, so no field is required in it; unknown fields stay errors. */
export function settingsFileSchema(paramsSchema: object): object {
  const { required: _required, ...rest } = paramsSchema as { required?: unknown };
  return rest;
}
