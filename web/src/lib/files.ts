// What the UI can do with a dataset file, by its name.

const TABLES = [".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"];
const TEXT = [".py", ".json", ".yaml", ".yml", ".txt", ".md", ".cfg", ".toml", ".ini",
  ".csv", ".tsv", ".jsonl"];

export function isTable(path: string): boolean {
  const p = path.toLowerCase();
  return TABLES.some((ext) => p.endsWith(ext));
}

export function isEditable(path: string): boolean {
  const p = path.toLowerCase();
  return TEXT.some((ext) => p.endsWith(ext));
}

/** Monaco's language id for a file. */
export function languageOf(path: string): string {
  const p = path.toLowerCase();
  if (p.endsWith(".py")) return "python";
  if (p.endsWith(".json")) return "json";
  if (p.endsWith(".yaml") || p.endsWith(".yml")) return "yaml";
  if (p.endsWith(".md")) return "markdown";
  return "plaintext";
}

/** "a/b/c.csv" -> ["a", "a/b"]: the folders above a path, outermost first. */
export function parentFolders(folder: string): { name: string; path: string }[] {
  const parts = folder.split("/").filter(Boolean);
  return parts.map((name, i) => ({ name, path: parts.slice(0, i + 1).join("/") }));
}
