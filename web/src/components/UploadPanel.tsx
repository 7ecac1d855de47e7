// Upload a file (or a zip to unpack) into a dataset with tus: progress bar, pause and
// resume; choosing the same file again after a reload continues where it stopped.
import { useEffect, useRef, useState } from "react";
import type { FormEvent } from "react";
import { formatBytes, formatTime } from "../lib/format";
import { ResumableUpload, forgetUpload, unfinishedUploads } from "../lib/upload";
import type { Unfinished } from "../lib/upload";
import { ErrorMessage } from "./Status";

type Phase = "idle" | "uploading" | "paused" | "done" | "failed";

interface Props {
  datasetId: string;
  /** Folder the file goes to (the folder the user is looking at). */
  folder: string;
  /** Called once the server has the file (a new version exists). */
  onUploaded: () => void;
}

export function UploadPanel({ datasetId, folder, onUploaded }: Props) {
  const [file, setFile] = useState<File | null>(null);
  const [path, setPath] = useState("");
  const [unpack, setUnpack] = useState(false);
  const [phase, setPhase] = useState<Phase>("idle");
  const [sent, setSent] = useState(0);
  const [total, setTotal] = useState(0);
  const [note, setNote] = useState("");
  const [error, setError] = useState<Error>();
  const [unfinished, setUnfinished] = useState<Unfinished[]>([]);
  const upload = useRef<ResumableUpload | null>(null);

  const refreshUnfinished = () => {
    void unfinishedUploads(datasetId).then(setUnfinished);
  };
  useEffect(refreshUnfinished, [datasetId]);
  useEffect(() => () => void upload.current?.pause(), []);

  function choose(f: File | null) {
    setFile(f);
    setError(undefined);
    setPhase("idle");
    setSent(0);
    setTotal(f?.size ?? 0);
    setNote("");
    if (f) {
      setPath(folder ? `${folder}/${f.name}` : f.name);
      setUnpack(false);
    }
  }

  async function start(e: FormEvent) {
    e.preventDefault();
    if (!file) return;
    setError(undefined);
    setPhase("uploading");
    const target = { dataset: datasetId, path, unpack, prefix: folder };
    upload.current = new ResumableUpload(file, target, {
      onProgress: (s, t) => {
        setSent(s);
        setTotal(t);
      },
      onSuccess: () => {
        setPhase("done");
        setNote(unpack ? `Unpacked ${file.name}.` : `Uploaded ${path}.`);
        refreshUnfinished();
        onUploaded();
      },
      onError: (err) => {
        setPhase("failed");
        setError(err);
        refreshUnfinished();
      },
    });
    const resumed = await upload.current.start();
    if (resumed) setNote("Resuming an earlier upload of this file from where it stopped.");
    refreshUnfinished();
  }

  async function pause() {
    await upload.current?.pause();
    setPhase("paused");
  }

  function resume() {
    setPhase("uploading");
    upload.current?.resume();
  }

  const pct = total > 0 ? Math.floor((sent / total) * 100) : 0;
  const isZip = file?.name.toLowerCase().endsWith(".zip") ?? false;
  const busy = phase === "uploading" || phase === "paused";

  return (
    <section className="card" aria-labelledby="upload-title">
      <h2 id="upload-title">Upload</h2>
      <form onSubmit={(e) => void start(e)} className="stack">
        <label>
          File
          <input type="file" disabled={busy}
                 onChange={(e) => choose(e.target.files?.[0] ?? null)} />
        </label>
        {file ? (
          <>
            {isZip ? (
              <label className="check">
                <input type="checkbox" checked={unpack} disabled={busy}
                       onChange={(e) => setUnpack(e.target.checked)} />
                Unpack the zip into {folder ? `“${folder}”` : "the dataset's root"}
              </label>
            ) : null}
            {!unpack ? (
              <label>
                Path in the dataset
                <input required value={path} disabled={busy}
                       onChange={(e) => setPath(e.target.value)} />
              </label>
            ) : null}
            <div className="row">
              {phase === "idle" || phase === "failed" || phase === "done" ? (
                <button type="submit" className="primary" disabled={!unpack && !path.trim()}>
                  Start upload
                </button>
              ) : null}
              {phase === "uploading" ? (
                <button type="button" onClick={() => void pause()}>Pause</button>
              ) : null}
              {phase === "paused" ? (
                <button type="button" className="primary" onClick={resume}>Resume</button>
              ) : null}
            </div>
            <div className="progress">
              <progress aria-label="Upload progress" max={100} value={pct} />
              <span aria-live="polite">
                {pct}% · {formatBytes(sent)} of {formatBytes(total)}
                {phase === "paused" ? " · paused" : ""}
                {phase === "done" ? " · done" : ""}
              </span>
            </div>
          </>
        ) : null}
        {note ? <p className="note" role="status">{note}</p> : null}
        <ErrorMessage error={error} />
      </form>
      {unfinished.length > 0 && !busy ? (
        <div className="unfinished">
          <h3>Unfinished uploads</h3>
          <p className="muted small">Choose the same file again to continue where it stopped.</p>
          <ul>
            {unfinished.map((u) => (
              <li key={u.key}>
                {u.path} ({formatBytes(u.size)}, started {formatTime(u.startedAt)}){" "}
                <button type="button" className="link"
                        onClick={() => void forgetUpload(u.key).then(refreshUnfinished)}>
                  Forget
                </button>
              </li>
            ))}
          </ul>
        </div>
      ) : null}
    </section>
  );
}
