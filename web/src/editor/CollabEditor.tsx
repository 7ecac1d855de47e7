// Monaco bound to the server's co-editing room for one dataset file (Yjs + y-monaco over
// y-websocket). Everyone with the file open sees the same text; the server persists the
// draft and drops a read-only user's changes. Python files are scanned as the user types
// (POST /api/v1/scan, debounced) and the findings become Monaco markers.
import { useEffect, useRef, useState } from "react";
import { MonacoBinding } from "y-monaco";
import { WebsocketProvider } from "y-websocket";
import * as Y from "yjs";
import { api, socketUrl, unwrap } from "../api/client";
import type { ScanResult } from "../api/client";
import { closeReason, colorFor, roomOf } from "../lib/collab";
import { debounce } from "../lib/debounce";
import { languageOf } from "../lib/files";
import { monaco } from "./monaco";
import { applySchema } from "./schemas";

export type Connection = "connecting" | "connected" | "disconnected";

export interface EditorState {
  connection: Connection;
  /** The first sync with the server is done (the text shown is the shared text). */
  synced: boolean;
  /** People with the document open, this tab included. */
  editors: number;
  /** Set when the server refused the document (the editor stops reconnecting). */
  refused: string | null;
}

interface Props {
  datasetId: string;
  path: string;
  readOnly: boolean;
  userName: string;
  /** A JSON schema the text must follow (JSON and YAML files: a task's params). */
  schema?: object | undefined;
  onState?: (state: EditorState) => void;
  onScan?: (result: ScanResult | null) => void;
}

const SCAN_DELAY_MS = 400;
const SCAN_OWNER = "clowder-ml-scan";

export default function CollabEditor(props: Props) {
  const { datasetId, path, readOnly, userName, schema, onState, onScan } = props;
  const host = useRef<HTMLDivElement>(null);
  const callbacks = useRef({ onState, onScan });
  callbacks.current = { onState, onScan };
  const [state, setState] = useState<EditorState>({
    connection: "connecting", synced: false, editors: 1, refused: null });

  useEffect(() => {
    callbacks.current.onState?.(state);
  }, [state]);

  useEffect(() => {
    const container = host.current;
    if (!container) return;
    const language = languageOf(path);
    const doc = new Y.Doc();
    const provider = new WebsocketProvider(socketUrl("/api/v1/documents/ws"),
      roomOf(datasetId, path), doc, { maxBackoffTime: 5000 });
    const uri = monaco.Uri.parse(`cml://dataset/${datasetId}/${path}`);
    monaco.editor.getModel(uri)?.dispose();
    const model = monaco.editor.createModel("", language, uri);
    const editor = monaco.editor.create(container, {
      model,
      readOnly,
      readOnlyMessage: { value: "You have read-only access to this dataset." },
      automaticLayout: true,
      minimap: { enabled: false },
      scrollBeyondLastLine: false,
      fontSize: 14,
      ariaLabel: `Editor for ${path}${readOnly ? " (read only)" : ""}`,
    });
    const binding = new MonacoBinding(doc.getText("content"), model, new Set([editor]),
      provider.awareness);
    provider.awareness.setLocalStateField("user", { name: userName, color: colorFor(userName) });

    const update = (patch: Partial<EditorState>) => setState((s) => ({ ...s, ...patch }));
    provider.on("status", ({ status }: { status: Connection }) => update({ connection: status }));
    provider.on("sync", (synced: boolean) => update({ synced }));
    provider.on("connection-close", (event: CloseEvent | null) => {
      const refused = event ? closeReason(event.code, event.reason) : null;
      if (refused) {
        provider.shouldConnect = false; // a refusal will not change by retrying
        update({ refused, connection: "disconnected" });
      }
    });
    const countEditors = () => update({ editors: Math.max(1, provider.awareness.getStates().size) });
    provider.awareness.on("change", countEditors);

    let scanAbort: AbortController | null = null;
    const scan = debounce(() => {
      scanAbort?.abort();
      const ctrl = new AbortController();
      scanAbort = ctrl;
      unwrap(api.POST("/api/v1/scan", { body: { code: model.getValue() }, signal: ctrl.signal }))
        .then((result) => {
          if (ctrl.signal.aborted || model.isDisposed()) return;
          monaco.editor.setModelMarkers(model, SCAN_OWNER, result.markers);
          callbacks.current.onScan?.(result);
        })
        .catch(() => {
          // A failed scan is advice missing, not an error to interrupt typing with.
        });
    }, SCAN_DELAY_MS);
    const scanSub = language === "python" ? model.onDidChangeContent(() => scan()) : null;
    if (language === "python") scan();

    return () => {
      scan.cancel();
      scanAbort?.abort();
      scanSub?.dispose();
      provider.awareness.off("change", countEditors);
      binding.destroy();
      provider.destroy();
      doc.destroy();
      editor.dispose();
      model.dispose();
    };
  }, [datasetId, path, readOnly, userName]);

  useEffect(() => {
    if (!schema) return;
    return applySchema(monaco.Uri.parse(`cml://dataset/${datasetId}/${path}`).toString(),
      languageOf(path), schema);
  }, [schema, datasetId, path]);

  return <div ref={host} className="monaco-host" data-testid="editor" />;
}
