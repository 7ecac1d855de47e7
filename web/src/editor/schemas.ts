// A JSON schema for one editor model: JSON files through Monaco's JSON language, YAML files
// through monaco-yaml (both validate in their workers and offer the schema's completions).
import { configureMonacoYaml } from "monaco-yaml";
import type { MonacoYaml } from "monaco-yaml";
import { monaco } from "./monaco";

let yaml: MonacoYaml | null = null;

/** Check the model at ``modelUri`` against ``schema``; returns how to stop. */
export function applySchema(modelUri: string, language: string, schema: object): () => void {
  // The schema's own id: no "#" in it (monaco-yaml would read it as a JSON pointer).
  const entry = { uri: modelUri.replace(/^cml:\/\/dataset\//, "cml://schema/"),
    fileMatch: [modelUri], schema };
  if (language === "json") {
    monaco.json.jsonDefaults.setDiagnosticsOptions({ validate: true, schemas: [entry] });
    return () => monaco.json.jsonDefaults.setDiagnosticsOptions({ validate: true, schemas: [] });
  }
  if (language === "yaml") {
    const options = { enableSchemaRequest: false, validate: true, schemas: [entry] };
    if (yaml) yaml.update(options);
    else yaml = configureMonacoYaml(monaco, options);
    return () => yaml?.update({ enableSchemaRequest: false, schemas: [] });
  }
  return () => undefined;
}
