import { describe, expect, it } from "vitest";
import {
  errorsByField, fieldsOf, initialValues, paramsOf, settingsFileSchema,
} from "./schemaForm";
import type { JsonSchema } from "./schemaForm";

// The shapes pydantic gives the tasks' params (see GET /api/v1/tasks).
const schema: JsonSchema = {
  type: "object",
  required: ["model_name"],
  properties: {
    model_name: { type: "string", title: "Model Name", maxLength: 128 },
    epochs: {
      anyOf: [{ type: "integer", minimum: 1, maximum: 100 }, { type: "string", const: "auto" }],
      default: "auto", title: "Epochs",
    },
    max_steps: { anyOf: [{ type: "integer", minimum: 1 }, { type: "null" }], default: null,
      title: "Max Steps" },
    learning_rate: { type: "number", default: 5e-5, exclusiveMinimum: 0, title: "Learning Rate" },
    padding: { type: "string", enum: ["longest", "max_length"], default: "longest" },
    truncation: { type: "boolean", default: true },
    files: { anyOf: [{ type: "array", items: { type: "string" } }, { type: "null" }],
      default: null },
    mode: { $ref: "#/$defs/Mode", default: "train" },
  },
  $defs: { Mode: { type: "string", enum: ["train", "predict"] } },
};

describe("fieldsOf", () => {
  const fields = Object.fromEntries(fieldsOf(schema).map((f) => [f.name, f]));

  it("types each field from the schema", () => {
    expect(fields.model_name).toMatchObject({ kind: "text", required: true, title: "Model Name" });
    expect(fields.max_steps).toMatchObject({ kind: "integer", nullable: true, min: 1 });
    expect(fields.learning_rate).toMatchObject({ kind: "number", min: 0, step: "any" });
    expect(fields.padding).toMatchObject({ kind: "choice", choices: ["longest", "max_length"] });
    expect(fields.truncation?.kind).toBe("boolean");
    expect(fields.files).toMatchObject({ kind: "list", nullable: true });
    expect(fields.mode).toMatchObject({ kind: "choice", choices: ["train", "predict"] });
  });

  it("treats a number-or-named-value union as one scalar input", () => {
    expect(fields.epochs).toMatchObject({ kind: "scalar", choices: ["auto"], min: 1, max: 100 });
  });
});

describe("paramsOf", () => {
  const fields = fieldsOf(schema);

  it("sends only what differs from the defaults, typed", () => {
    const values = { ...initialValues(fields), model_name: " sentiment ", max_steps: "4",
      learning_rate: "0.0001", truncation: false, files: "a.csv\nb.csv" };
    expect(paramsOf(fields, values)).toEqual({
      params: { model_name: "sentiment", max_steps: 4, learning_rate: 0.0001,
        truncation: false, files: ["a.csv", "b.csv"] },
      errors: {},
    });
  });

  it("reads a scalar union as a number when it is one", () => {
    const base = { ...initialValues(fields), model_name: "m" };
    expect(paramsOf(fields, { ...base, epochs: "3" }).params.epochs).toBe(3);
    expect(paramsOf(fields, { ...base, epochs: "auto" }).params.epochs).toBeUndefined();
  });

  it("says which inputs are not even the right kind of value", () => {
    const values = { ...initialValues(fields), max_steps: "four", learning_rate: "x" };
    expect(paramsOf(fields, values).errors).toEqual({
      model_name: "Required.", max_steps: "Enter a whole number.", learning_rate: "Enter a number.",
    });
  });
});

describe("errorsByField", () => {
  it("files each server message under its top-level field", () => {
    expect(errorsByField([
      { field: "epochs.int", message: "Input should be greater than or equal to 1" },
      { field: "epochs.literal['auto']", message: "Input should be 'auto'" },
      { field: "", message: "validation_file and validation_split are exclusive" },
    ])).toEqual({
      epochs: "Input should be greater than or equal to 1 / Input should be 'auto'",
      "": "validation_file and validation_split are exclusive",
    });
  });
});

describe("settingsFileSchema", () => {
  it("requires nothing of a settings file, which only overrides the form", () => {
    const file = settingsFileSchema(schema) as JsonSchema;
    expect(file.required).toBeUndefined();
    expect(Object.keys(file.properties ?? {})).toEqual(Object.keys(schema.properties ?? {}));
    expect(schema.required).toEqual(["model_name"]);
  });
});
