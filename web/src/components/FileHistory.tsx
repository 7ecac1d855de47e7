import { api, fileUrl, unwrap } from "../api/client";
import { formatBytes, formatTime } from "../lib/format";
import { useLoad } from "../lib/useLoad";
import { ErrorMessage } from "./Status";

/** The versions of the dataset in which a file changed, newest first. */
export function FileHistory({ datasetId, path, refresh }: {
  datasetId: string; path: string; refresh: number;
}) {
  const history = useLoad((signal) => unwrap(api.GET("/api/v1/documents/history", {
    params: { query: { dataset: datasetId, path } }, signal })), [datasetId, path, refresh]);
  return (
    <section className="card" aria-labelledby="history-title">
      <h2 id="history-title">History of {path}</h2>
      <ErrorMessage error={history.error} />
      {history.data && history.data.length === 0 ? (
        <p className="muted">Not saved yet: this file is new.</p>
      ) : null}
      <ol className="history">
        {(history.data ?? []).map((r) => (
          <li key={r.version}>
            <strong>Version {r.version}</strong>{" "}
            {r.sha256 ? (
              <a href={fileUrl(datasetId, path, r.version)} download
                 aria-label={`Download ${path} as of version ${r.version}`}>
                {formatBytes(r.size)}
              </a>
            ) : <span>removed</span>}
            <div className="muted small">
              {r.message || "—"} · {r.author ?? "?"} · {formatTime(r.created_at)}
            </div>
          </li>
        ))}
      </ol>
    </section>
  );
}
