/// <reference types="vitest/config" />
// The UI is built into the Python package (clowder_ml/api/static), which `clowder-ml serve`
// serves at "/". `npm run dev` proxies the API to a server on :8000.
import { fileURLToPath } from "node:url";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

const outDir = fileURLToPath(new URL("../clowder_ml/api/static", import.meta.url));
const monacoEsm = fileURLToPath(new URL("node_modules/monaco-editor/esm/vs/", import.meta.url));
const workerManager = fileURLToPath(new URL("src/editor/workerManager.ts", import.meta.url));

export default defineConfig({
  plugins: [react()],
  resolve: {
    // y-monaco imports monaco-editor/esm/vs/..., a path monaco-editor 0.57's "exports" map
    // no longer exposes; point it at the same files.
    alias: [
      { find: /^monaco-editor\/esm\/vs\/(.*)$/, replacement: `${monacoEsm}$1` },
      // monaco-yaml's worker manager, adapted to monaco 0.57's worker API (see the file).
      { find: /^monaco-worker-manager$/, replacement: workerManager },
    ],
  },
  build: {
    outDir,
    emptyOutDir: true,
    // Monaco is one large chunk by nature; it loads only on the editor pages.
    chunkSizeWarningLimit: 4096,
  },
  server: {
    proxy: {
      "/api": { target: "http://127.0.0.1:8000", ws: true },
    },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test/setup.ts"],
  },
});
