import { Link } from "react-router";
import { api, unwrap } from "../api/client";
import { Loading, LoadError } from "../components/Status";
import { useLoad } from "../lib/useLoad";

export function ModelsPage() {
  const models = useLoad((signal) => unwrap(api.GET("/api/v1/models", { signal })), []);
  return (
    <>
      <h1>Models</h1>
      <LoadError error={models.error} />
      {models.loading && !models.data ? <Loading /> : null}
      {models.data && models.data.length === 0 ? (
        <p className="muted">No models yet: a successful fine-tune registers one.{" "}
          <Link to="/run">Run a task</Link>.</p>
      ) : null}
      {models.data && models.data.length > 0 ? (
        <div className="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Model</th>
                <th scope="col">Owner</th>
                <th scope="col">Versions</th>
                <th scope="col">Aliases</th>
                <th scope="col">Best by</th>
              </tr>
            </thead>
            <tbody>
              {models.data.map((m) => (
                <tr key={m.id}>
                  <td><Link to={`/models/${encodeURIComponent(m.ref)}`}>{m.name}</Link>
                    {m.description ? <div className="muted small">{m.description}</div> : null}
                  </td>
                  <td>{m.owner}</td>
                  <td>{m.versions}{m.latest ? ` (latest ${m.latest})` : ""}</td>
                  <td>{Object.entries(m.aliases).map(([a, v]) => `${a} → ${v}`).join(", ")
                    || "—"}</td>
                  <td>{m.best_metric ? `${m.best_metric} (${m.best_mode})` : "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </>
  );
}
