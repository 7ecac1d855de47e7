// The inputs of a task's params: one labelled control per field, its description as help
// text, and the server's message for it (or a local "not a number") right below it.
import { useState } from "react";
import type { FieldSpec, FormValues } from "../lib/schemaForm";

interface Props {
  fields: FieldSpec[];
  values: FormValues;
  errors: Record<string, string>;
  onChange: (name: string, value: string | boolean) => void;
}

export function SchemaForm({ fields, values, errors, onChange }: Props) {
  const required = fields.filter((f) => f.required);
  const optional = fields.filter((f) => !f.required);
  const optionalErrors = optional.filter((f) => errors[f.name]).length;
  // Opened by the user or by an error in it; it stays open once the error is fixed.
  const [open, setOpen] = useState(false);
  return (
    <div className="schema-form">
      {errors[""] ? <p className="error" role="alert">{errors[""]}</p> : null}
      <div className="fields">
        {required.map((f) => (
          <Field key={f.name} field={f} value={values[f.name]} error={errors[f.name]}
                 onChange={onChange} />
        ))}
      </div>
      {optional.length > 0 ? (
        <details open={open || optionalErrors > 0}
                 onToggle={(e) => setOpen(e.currentTarget.open)}>
          <summary>
            Optional parameters ({optional.length}, defaults filled in)
            {optionalErrors ? ` · ${optionalErrors} to fix` : ""}
          </summary>
          <div className="fields">
            {optional.map((f) => (
              <Field key={f.name} field={f} value={values[f.name]} error={errors[f.name]}
                     onChange={onChange} />
            ))}
          </div>
        </details>
      ) : null}
    </div>
  );
}

interface FieldProps {
  field: FieldSpec;
  value: string | boolean | undefined;
  error: string | undefined;
  onChange: (name: string, value: string | boolean) => void;
}

function Field({ field: f, value, error, onChange }: FieldProps) {
  const id = `param-${f.name}`;
  const helpId = f.description ? `${id}-help` : undefined;
  const errorId = error ? `${id}-error` : undefined;
  const describedBy = [helpId, errorId].filter(Boolean).join(" ") || undefined;
  const common = {
    id,
    name: f.name,
    "aria-describedby": describedBy,
    "aria-invalid": error ? true : undefined,
  };
  const text = typeof value === "string" ? value : "";
  let control;
  if (f.kind === "boolean") {
    control = <input type="checkbox" {...common} checked={value === true}
                     onChange={(e) => onChange(f.name, e.target.checked)} />;
  } else if (f.kind === "choice") {
    control = (
      <select {...common} value={text} onChange={(e) => onChange(f.name, e.target.value)}>
        {f.nullable || !f.required ? <option value="">(default)</option> : null}
        {f.choices.map((c) => <option key={c} value={c}>{c}</option>)}
      </select>
    );
  } else if (f.kind === "scalar") {
    control = (
      <>
        <input {...common} type="text" value={text} list={`${id}-choices`}
               onChange={(e) => onChange(f.name, e.target.value)} />
        <datalist id={`${id}-choices`}>
          {f.choices.map((c) => <option key={c} value={c} />)}
        </datalist>
      </>
    );
  } else if (f.kind === "list" || f.kind === "json") {
    control = <textarea {...common} rows={2} value={text}
                        placeholder={f.kind === "list" ? "one per line" : "JSON"}
                        onChange={(e) => onChange(f.name, e.target.value)} />;
  } else {
    const numeric = f.kind === "integer" || f.kind === "number";
    control = <input {...common} type={numeric ? "number" : "text"} value={text}
                     inputMode={numeric ? "decimal" : undefined} step={f.step}
                     min={f.min} max={f.max} required={f.required}
                     placeholder={f.nullable ? "(not set)" : undefined}
                     onChange={(e) => onChange(f.name, e.target.value)} />;
  }
  return (
    <div className={`field${f.kind === "boolean" ? " field-check" : ""}${error ? " invalid" : ""}`}>
      <label htmlFor={id}>
        {f.title}
        {f.required ? <span aria-hidden="true"> *</span> : null}
        <span className="param-name"> {f.name}</span>
      </label>
      {control}
      {f.description ? (
        <small id={helpId} className="muted" title={f.description}>{f.description}</small>
      ) : null}
      {error ? <small id={errorId} className="field-error" role="alert">{error}</small> : null}
    </div>
  );
}
