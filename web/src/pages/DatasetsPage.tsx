import { useState } from "react";
import type { FormEvent } from "react";
import { Link, useNavigate } from "react-router";
import { api, unwrap } from "../api/client";
import { ErrorMessage, Loading, LoadError } from "../components/Status";
import { formatTime } from "../lib/format";
import { useLoad } from "../lib/useLoad";

export function DatasetsPage() {
  const list = useLoad((signal) => unwrap(api.GET("/api/v1/datasets", { signal })), []);
  return (
    <>
      <h1>Datasets</h1>
      <CreateDataset />
      <section aria-labelledby="ds-list-title">
        <h2 id="ds-list-title">Your datasets and datasets shared with you</h2>
        {list.loading && !list.data ? <Loading /> : null}
        <LoadError error={list.error} />
        {list.data && list.data.length === 0 ? (
          <p className="muted">No datasets yet: create one above, then upload files to it.</p>
        ) : null}
        {list.data && list.data.length > 0 ? (
          <div className="scroll">
            <table>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Owner</th>
                  <th scope="col">Latest version</th>
                  <th scope="col">Access</th>
                  <th scope="col">Updated</th>
                </tr>
              </thead>
              <tbody>
                {list.data.map((ds) => (
                  <tr key={ds.id}>
                    <td>
                      <Link to={`/datasets/${ds.id}`}>{ds.name}</Link>
                      {ds.description ? <div className="muted small">{ds.description}</div> : null}
                    </td>
                    <td>{ds.owner}</td>
                    <td>{ds.latest_version || "empty"}</td>
                    <td>{ds.permission}</td>
                    <td>{formatTime(ds.updated_at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        ) : null}
      </section>
    </>
  );
}

function CreateDataset() {
  const navigate = useNavigate();
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const ds = await unwrap(api.POST("/api/v1/datasets", { body: { name, description } }));
      navigate(`/datasets/${ds.id}`);
    } catch (err) {
      setError(err as Error);
      setBusy(false);
    }
  }

  return (
    <form className="card inline-form" onSubmit={(e) => void submit(e)}
          aria-labelledby="ds-new-title">
      <h2 id="ds-new-title">New dataset</h2>
      <label>
        Name
        <input required maxLength={128} value={name} onChange={(e) => setName(e.target.value)}
               placeholder="reviews" />
      </label>
      <label className="grow">
        Description
        <input maxLength={10000} value={description}
               onChange={(e) => setDescription(e.target.value)} />
      </label>
      <button type="submit" className="primary" disabled={busy || !name.trim()}>
        Create dataset
      </button>
      <ErrorMessage error={error} />
    </form>
  );
}
