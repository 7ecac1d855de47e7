// monaco-worker-manager's createWorkerManager for monaco-editor 0.5x, which Vite puts in
// place of the package for monaco-yaml (see vite.config.ts).
//
// monaco-worker-manager 2 calls monaco.editor.createWebWorker({moduleId, label, createData});
// monaco-editor 0.57 takes {worker} instead and no longer sends the create data, so
// monaco-yaml's worker started without its language service ("Missing requestHandler or
// method: doValidation"). This starts the worker the way monaco's own languages now do
// (internal/common/workers.js): MonacoEnvironment.getWorker(label), then a first message
// that wakes the worker's initializer and a second with the create data.
import type * as Monaco from "monaco-editor";

interface Options<C> {
  createData?: C;
  interval?: number;
  label: string;
  moduleId: string;
  stopWhenIdleFor?: number;
}

type Editor = typeof Monaco.editor;

export function createWorkerManager<T extends object, C>(monaco: { editor: Editor },
                                                           options: Options<C>) {
  type WebWorker = Monaco.editor.MonacoWebWorker<T>;
  let { createData } = options;
  const { interval = 30_000, label, stopWhenIdleFor = 120_000 } = options;
  let worker: WebWorker | undefined;
  let lastUsed = 0;
  let disposed = false;

  const stop = () => {
    worker?.dispose();
    worker = undefined;
  };
  const timer = setInterval(() => {
    if (worker && Date.now() - lastUsed > stopWhenIdleFor) stop();
  }, interval);

  const start = (): WebWorker => {
    const env = (globalThis as { MonacoEnvironment?: Monaco.Environment }).MonacoEnvironment;
    const raw = env?.getWorker?.("workerMain.js", label);
    if (!raw) throw new Error(`MonacoEnvironment.getWorker gave no worker for ${label}`);
    const ready = Promise.resolve(raw).then((w) => {
      w.postMessage("ignore");
      w.postMessage(createData);
      return w;
    });
    return monaco.editor.createWebWorker<T>({ worker: ready });
  };

  return {
    dispose() {
      disposed = true;
      clearInterval(timer);
      stop();
    },
    getWorker(...resources: Monaco.Uri[]): Promise<T> {
      if (disposed) throw new Error("Worker manager has been disposed");
      lastUsed = Date.now();
      worker ??= start();
      return worker.withSyncedResources(resources);
    },
    updateCreateData(next: C) {
      createData = next;
      stop();
    },
  };
}
