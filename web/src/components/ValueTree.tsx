// Nested JSON (lineage, verdict differences) as nested lists a person can read.
import { formatNumber } from "../lib/format";

export function ValueTree({ value }: { value: unknown }) {
  if (Array.isArray(value)) {
    if (value.length === 0) return <span className="muted">none</span>;
    return (
      <ol className="tree">
        {value.map((v, i) => <li key={i}><ValueTree value={v} /></li>)}
      </ol>
    );
  }
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0) return <span className="muted">none</span>;
    return (
      <dl className="tree">
        {entries.map(([k, v]) => (
          <div key={k}>
            <dt>{k}</dt>
            <dd><ValueTree value={v} /></dd>
          </div>
        ))}
      </dl>
    );
  }
  return <span>{formatNumber(value)}</span>;
}
