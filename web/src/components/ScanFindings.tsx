import type { ScanResult } from "../api/client";

/** The scan's findings as text (the same as the editor's markers, for screen readers and
 *  for people who prefer a list). */
export function ScanFindings({ result }: { result: ScanResult | null }) {
  if (!result) return null;
  return (
    <section className="card" aria-labelledby="scan-title">
      <h2 id="scan-title">Code scan</h2>
      {result.findings.length === 0 ? (
        <p className="muted">No findings.</p>
      ) : (
        <>
          <p className={result.blocked ? "error-text" : "muted"}>
            {result.blocked
              ? `A run of this code would be refused (findings at or above “${result.block_at}”).`
              : "Advice only: a run would not be refused."}
          </p>
          <ul className="findings">
            {result.findings.map((f, i) => (
              <li key={i} className={`sev-${f.severity}`}>
                <strong>Line {f.line}</strong> · {f.severity} · {f.rule_id}: {f.message}
                {f.hint ? <div className="muted small">{f.hint}</div> : null}
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
