import type { Preview } from "../api/client";
import { formatNumber } from "../lib/format";

/** The first rows of a table file, with each column's inferred type. */
export function PreviewTable({ preview }: { preview: Preview }) {
  const names = preview.columns.map((c) => c.name ?? "");
  const cell = (row: unknown, i: number): unknown => {
    if (Array.isArray(row)) return row[i];
    if (row && typeof row === "object") return (row as Record<string, unknown>)[names[i] ?? ""];
    return row;
  };
  return (
    <div className="scroll">
      <table className="preview">
        <caption>
          {preview.path} · {preview.format.toUpperCase()} · {preview.row_count} rows
          {preview.rows.length < preview.row_count ? ` (first ${preview.rows.length} shown)` : ""}
        </caption>
        <thead>
          <tr>
            {preview.columns.map((c, i) => (
              <th key={i} scope="col">
                {c.name}
                <span className="type">{c.type}</span>
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {preview.rows.map((row, r) => (
            <tr key={r}>
              {names.map((_, i) => (
                <td key={i}>{formatNumber(cell(row, i))}</td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
