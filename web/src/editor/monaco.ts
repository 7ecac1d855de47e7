// Monaco, bundled by Vite with its workers as same-origin files: no CDN, no eval, nothing
// inline, so it runs under the server's Content-Security-Policy (worker-src 'self' blob:).
import * as monaco from "monaco-editor";
import EditorWorker from "monaco-editor/editor/editor.worker?worker";
import JsonWorker from "monaco-editor/language/json/json.worker?worker";
import YamlWorker from "./yaml.worker?worker";

self.MonacoEnvironment = {
  getWorker(_workerId: string, label: string): Worker {
    if (label === "json") return new JsonWorker();
    if (label === "yaml") return new YamlWorker();
    return new EditorWorker();
  },
};

export { monaco };
