import { useState } from "react";
import type { FormEvent } from "react";
import { Link, useNavigate, useParams, useSearchParams } from "react-router";
import { api, fileUrl, unwrap } from "../api/client";
import type { Dataset } from "../api/client";
import { PreviewTable } from "../components/PreviewTable";
import { ErrorMessage, Loading, LoadError } from "../components/Status";
import { UploadPanel } from "../components/UploadPanel";
import { isEditable, isTable, parentFolders } from "../lib/files";
import { formatBytes, formatTime } from "../lib/format";
import { useLoad } from "../lib/useLoad";

export function DatasetPage() {
  const { ref = "" } = useParams();
  const ds = useLoad((signal) => unwrap(api.GET("/api/v1/datasets/{ref}", {
    params: { path: { ref } }, signal })), [ref]);

  if (ds.error) return <LoadError error={ds.error} />;
  if (!ds.data) return <Loading />;
  return <DatasetView ds={ds.data} reload={ds.reload} />;
}

function DatasetView({ ds, reload }: { ds: Dataset; reload: () => void }) {
  const [params, setParams] = useSearchParams();
  const folder = params.get("path") ?? "";
  const file = params.get("file");
  const pinned = Number(params.get("v")) || undefined;
  const version = pinned ?? (ds.latest_version || undefined);
  const writable = ds.permission === "write";

  const set = (changes: Record<string, string | null>) => {
    setParams((prev) => {
      const next = new URLSearchParams(prev);
      for (const [k, v] of Object.entries(changes)) {
        if (v === null || v === "") next.delete(k);
        else next.set(k, v);
      }
      return next;
    });
  };

  return (
    <>
      <header className="page-head">
        <h1>{ds.name}</h1>
        <p className="muted">
          {ds.owner}’s dataset · {writable ? "you can write" : "read only"} ·{" "}
          {ds.latest_version ? `latest version ${ds.latest_version}` : "no files yet"}
        </p>
        {ds.description ? <p>{ds.description}</p> : null}
        <p><Link to={`/run?dataset=${ds.id}`}>Run a task on this dataset</Link></p>
      </header>
      <div className="columns">
        <div className="main-col">
          <FilesCard ds={ds} folder={folder} version={version} writable={writable}
                     onFolder={(p) => set({ path: p, file: null })}
                     onFile={(p) => set({ file: p })} />
          {file ? <PreviewCard ds={ds} path={file} version={version}
                               onClose={() => set({ file: null })} /> : null}
        </div>
        <div className="side-col">
          {writable ? (
            <UploadPanel datasetId={ds.id} folder={folder} onUploaded={reload} />
          ) : null}
          <NewFileCard ds={ds} folder={folder} />
          {writable ? <SharingCard ds={ds} /> : null}
          <VersionsCard ds={ds} selected={version} latest={ds.latest_version}
                        onSelect={(v) => set({ v: v === ds.latest_version ? null : String(v) })} />
        </div>
      </div>
    </>
  );
}

interface FilesProps {
  ds: Dataset;
  folder: string;
  version: number | undefined;
  writable: boolean;
  onFolder: (path: string) => void;
  onFile: (path: string) => void;
}

function FilesCard({ ds, folder, version, onFolder, onFile }: FilesProps) {
  const tree = useLoad((signal) => unwrap(api.GET("/api/v1/datasets/{ref}/tree", {
    params: { path: { ref: ds.id }, query: { path: folder, version } }, signal })),
  [ds.id, folder, version, ds.latest_version]);

  return (
    <section className="card" aria-labelledby="files-title">
      <h2 id="files-title">Files{version ? ` · version ${version}` : ""}</h2>
      <nav aria-label="Folder" className="crumbs">
        <button type="button" className="link" onClick={() => onFolder("")}>{ds.name}</button>
        {parentFolders(folder).map((f) => (
          <span key={f.path}>
            {" / "}
            <button type="button" className="link" onClick={() => onFolder(f.path)}>
              {f.name}
            </button>
          </span>
        ))}
      </nav>
      {tree.loading && !tree.data ? <Loading /> : null}
      <ErrorMessage error={tree.error} />
      {tree.data && tree.data.entries.length === 0 ? (
        <p className="muted">This folder is empty{ds.permission === "write"
          ? ": upload a file." : "."}</p>
      ) : null}
      {tree.data && tree.data.entries.length > 0 ? (
        <div className="scroll">
          <table aria-label="Files">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Size</th>
                <th scope="col"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {tree.data.entries.map((e) => (
                <tr key={e.path}>
                  <td>
                    {e.kind === "folder" ? (
                      <button type="button" className="link folder" onClick={() => onFolder(e.path)}>
                        {e.name}/
                      </button>
                    ) : (
                      <button type="button" className="link" onClick={() => onFile(e.path)}
                              title={isTable(e.path) ? "Preview" : "Details"}>
                        {e.name}
                      </button>
                    )}
                  </td>
                  <td>{formatBytes(e.size)}{e.kind === "folder" ? ` · ${e.files} files` : ""}</td>
                  <td className="actions">
                    {e.kind === "file" ? (
                      <>
                        <a href={fileUrl(ds.id, e.path, version)} download
                           aria-label={`Download ${e.name}`}>Download</a>
                        {isEditable(e.path) ? (
                          <Link to={`/datasets/${ds.id}/edit?path=${encodeURIComponent(e.path)}`}
                                aria-label={`Edit ${e.name}`}>Edit</Link>
                        ) : null}
                      </>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </section>
  );
}

function PreviewCard({ ds, path, version, onClose }: {
  ds: Dataset; path: string; version: number | undefined; onClose: () => void;
}) {
  const table = isTable(path);
  const preview = useLoad(async (signal) => table ? unwrap(api.GET(
    "/api/v1/datasets/{ref}/preview/{path}", {
      params: { path: { ref: ds.id, path }, query: { rows: 50, version } }, signal })) : null,
  [ds.id, path, version]);
  return (
    <section className="card" aria-labelledby="preview-title">
      <div className="card-head">
        <h2 id="preview-title">{path}</h2>
        <button type="button" onClick={onClose}>Close preview</button>
      </div>
      <p className="row">
        <a href={fileUrl(ds.id, path, version)} download>Download</a>
        {isEditable(path) ? (
          <Link to={`/datasets/${ds.id}/edit?path=${encodeURIComponent(path)}`}>Open in editor</Link>
        ) : null}
      </p>
      {!table ? <p className="muted">No table preview for this kind of file.</p> : null}
      {preview.loading && !preview.data ? <Loading what="Reading the file" /> : null}
      <ErrorMessage error={preview.error} />
      {preview.data ? <PreviewTable preview={preview.data} /> : null}
    </section>
  );
}

function NewFileCard({ ds, folder }: { ds: Dataset; folder: string }) {
  const navigate = useNavigate();
  const [path, setPath] = useState("");
  function open(e: FormEvent) {
    e.preventDefault();
    const p = path.includes("/") || !folder ? path : `${folder}/${path}`;
    navigate(`/datasets/${ds.id}/edit?path=${encodeURIComponent(p)}`);
  }
  return (
    <form className="card stack" onSubmit={open} aria-labelledby="newfile-title">
      <h2 id="newfile-title">Edit a file</h2>
      <label>
        File path
        <input required value={path} onChange={(e) => setPath(e.target.value)}
               placeholder="config.py" />
      </label>
      <button type="submit">Open in editor</button>
    </form>
  );
}

function VersionsCard({ ds, selected, latest, onSelect }: {
  ds: Dataset; selected: number | undefined; latest: number; onSelect: (v: number) => void;
}) {
  const versions = useLoad((signal) => unwrap(api.GET("/api/v1/datasets/{ref}/versions", {
    params: { path: { ref: ds.id } }, signal })), [ds.id, latest]);
  return (
    <section className="card" aria-labelledby="versions-title">
      <h2 id="versions-title">Versions</h2>
      <ErrorMessage error={versions.error} />
      {versions.data && versions.data.length === 0 ? <p className="muted">None yet.</p> : null}
      <ol className="versions" reversed>
        {[...(versions.data ?? [])].reverse().map((v) => (
          <li key={v.number} aria-current={v.number === selected ? "true" : undefined}>
            <button type="button" className="link" onClick={() => onSelect(v.number)}>
              Version {v.number}
            </button>{" "}
            <span className="muted small">
              {v.message || "—"} · {v.file_count} files · {formatBytes(v.total_bytes)} ·{" "}
              {formatTime(v.created_at)}
            </span>{" "}
            <a href={`/api/v1/datasets/${ds.id}/versions/${v.number}/archive`} download
               aria-label={`Download version ${v.number} as zip`}>zip</a>
          </li>
        ))}
      </ol>
    </section>
  );
}

function SharingCard({ ds }: { ds: Dataset }) {
  const shares = useLoad((signal) => unwrap(api.GET("/api/v1/datasets/{ref}/shares", {
    params: { path: { ref: ds.id } }, signal })), [ds.id]);
  const [user, setUser] = useState("");
  const [permission, setPermission] = useState<"read" | "write">("read");
  const [error, setError] = useState<Error>();

  async function share(e: FormEvent) {
    e.preventDefault();
    setError(undefined);
    try {
      await unwrap(api.PUT("/api/v1/datasets/{ref}/shares/{username}", {
        params: { path: { ref: ds.id, username: user.trim() } }, body: { permission } }));
      setUser("");
      shares.reload();
    } catch (err) {
      setError(err as Error);
    }
  }

  async function unshare(username: string) {
    setError(undefined);
    try {
      await unwrap(api.DELETE("/api/v1/datasets/{ref}/shares/{username}", {
        params: { path: { ref: ds.id, username } } }));
      shares.reload();
    } catch (err) {
      setError(err as Error);
    }
  }

  return (
    <section className="card" aria-labelledby="sharing-title">
      <h2 id="sharing-title">Sharing</h2>
      <ul className="shares">
        {(shares.data ?? []).map((s) => (
          <li key={s.username}>
            {s.username} ({s.permission}){" "}
            <button type="button" className="link" onClick={() => void unshare(s.username)}
                    aria-label={`Stop sharing with ${s.username}`}>stop sharing</button>
          </li>
        ))}
        {shares.data && shares.data.length === 0 ? (
          <li className="muted">Not shared: only you and admins can see it.</li>
        ) : null}
      </ul>
      <form className="inline-form" onSubmit={(e) => void share(e)}>
        <label className="grow">
          User
          <input required value={user} onChange={(e) => setUser(e.target.value)} />
        </label>
        <label>
          Permission
          <select value={permission}
                  onChange={(e) => setPermission(e.target.value as "read" | "write")}>
            <option value="read">read</option>
            <option value="write">write</option>
          </select>
        </label>
        <button type="submit">Share</button>
      </form>
      <ErrorMessage error={error} />
    </section>
  );
}
