// monaco-yaml's worker, through a file of our own so Vite bundles it as a worker
// (importing monaco-yaml/yaml.worker.js directly breaks under Vite; see its README).
import "monaco-yaml/yaml.worker.js";
