import { useState } from "react";
import type { FormEvent } from "react";
import { api, unwrap } from "../api/client";
import { ErrorMessage } from "./Status";

/** Save the shared draft as a new dataset version (writers only). */
export function SaveBar({ datasetId, path, disabled, onSaved }: {
  datasetId: string; path: string; disabled: boolean; onSaved: (version: number) => void;
}) {
  const [message, setMessage] = useState("");
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState("");
  const [error, setError] = useState<Error>();

  async function save(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const out = await unwrap(api.POST("/api/v1/documents/save", {
        body: { dataset: datasetId, path, message } }));
      setNote(out.changed ? `Saved as version ${out.version.number}.`
        : `No changes since version ${out.version.number}.`);
      setMessage("");
      onSaved(out.version.number);
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="savebar" onSubmit={(e) => void save(e)}>
      <label className="grow">
        <span className="sr-only">Version message</span>
        <input placeholder="What changed (optional)" value={message} maxLength={500}
               disabled={disabled} onChange={(e) => setMessage(e.target.value)} />
      </label>
      <button type="submit" className="primary" disabled={disabled || busy}>
        {busy ? "Saving…" : "Save version"}
      </button>
      {note ? <span role="status" className="note">{note}</span> : null}
      <ErrorMessage error={error} />
    </form>
  );
}
