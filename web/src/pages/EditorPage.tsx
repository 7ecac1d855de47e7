import { useState } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { api, unwrap } from "../api/client";
import type { ScanResult } from "../api/client";
import { useAuth } from "../auth";
import { FileHistory } from "../components/FileHistory";
import { SaveBar } from "../components/SaveBar";
import { ScanFindings } from "../components/ScanFindings";
import { Loading, LoadError, NotFound } from "../components/Status";
import CollabEditor from "../editor/CollabEditor";
import type { EditorState } from "../editor/CollabEditor";
import { settingsFileSchema } from "../lib/schemaForm";
import { useLoad } from "../lib/useLoad";

/** /datasets/:ref/edit?path=config.py[&task=NAME]: co-edit one file of a dataset. */
export default function EditorPage() {
  const { ref = "" } = useParams();
  const [params] = useSearchParams();
  const path = params.get("path") ?? "";
  const task = params.get("task");
  const { user } = useAuth();
  const ds = useLoad((signal) => unwrap(api.GET("/api/v1/datasets/{ref}", {
    params: { path: { ref } }, signal })), [ref]);
  const tasks = useLoad(async (signal) => task
    ? unwrap(api.GET("/api/v1/tasks", { signal })) : [], [task]);
  const [state, setState] = useState<EditorState | null>(null);
  const [scan, setScan] = useState<ScanResult | null>(null);
  const [saved, setSaved] = useState(0);

  if (ds.error) return <LoadError error={ds.error} />;
  if (!path) return <NotFound message="No file named: add ?path=… to the address." />;
  if (!ds.data || !user) return <Loading />;
  const readOnly = ds.data.permission !== "write";
  const taskSchema = tasks.data?.find((t) => t.name === task)?.params_schema;
  const schema = taskSchema ? settingsFileSchema(taskSchema) : undefined;

  return (
    <>
      <header className="page-head">
        <h1>{path}</h1>
        <p className="muted">
          in <Link to={`/datasets/${ds.data.id}`}>{ds.data.name}</Link>
          {readOnly ? " · read only" : ""}
          {schema ? ` · checked against the ${task} params` : ""}
        </p>
      </header>
      <div className="editor-status" role="status" aria-live="polite">
        {state?.refused ?? (
          state ? `${state.connection === "connected" ? (state.synced ? "Live" : "Syncing")
            : "Reconnecting"} · ${state.editors} ${state.editors === 1 ? "editor" : "editors"}`
            : "Connecting"
        )}
      </div>
      {readOnly ? (
        <p className="note">You have read-only access: you see others’ changes live but cannot
          change this file.</p>
      ) : (
        <SaveBar datasetId={ds.data.id} path={path} disabled={!state?.synced}
                 onSaved={() => setSaved((n) => n + 1)} />
      )}
      <CollabEditor datasetId={ds.data.id} path={path} readOnly={readOnly}
                    userName={user.username} schema={schema} onState={setState}
                    onScan={setScan} />
      <div className="columns">
        <div className="main-col"><ScanFindings result={scan} /></div>
        <div className="side-col">
          <FileHistory datasetId={ds.data.id} path={path} refresh={saved} />
        </div>
      </div>
    </>
  );
}
