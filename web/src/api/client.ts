// The typed API client: openapi-fetch over the types generated from the server's OpenAPI
// (schema.d.ts, made by scripts/gen-api.sh; a test keeps it equal to the server's).
// Requests carry the session cookie (same origin); errors become ApiError with the server's
// stable code, message and hint.
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type User = Schemas["UserOut"];
export type Dataset = Schemas["DatasetOut"];
export type TreeNode = Schemas["TreeNodeOut"];
export type Version = Schemas["VersionOut"];
export type Preview = Schemas["PreviewOut"];
export type Job = Schemas["JobOut"];
export type JobEvent = Schemas["JobEventOut"];
export type Metric = Schemas["MetricOut"];
export type Output = Schemas["OutputOut"];
export type Task = Schemas["TaskOut"];
export type Model = Schemas["ModelOut"];
export type ModelVersion = Schemas["ModelVersionOut"];
export type Aliases = Schemas["AliasesOut"];
export type Reproduction = Schemas["ReproductionOut"];
export type ScanResult = Schemas["ScanOut"];
export type Marker = Schemas["MarkerOut"];
export type FieldError = Schemas["FieldErrorOut"];
export type Revision = Schemas["RevisionOut"];

/** An error answered by the server ({"error": {code, message, hint}}) or the network. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly hint: string | null;

  constructor(status: number, code: string, message: string, hint: string | null = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.hint = hint;
  }

  get notFound(): boolean {
    return this.status === 404;
  }
}

interface ErrorBody {
  error?: { code?: string; message?: string; hint?: string | null };
}

/** The ApiError for a failed response and its parsed body (if any). */
export function toApiError(status: number, body: unknown): ApiError {
  const err = (body as ErrorBody | undefined)?.error;
  if (err && typeof err.message === "string") {
    return new ApiError(status, err.code ?? "error", err.message, err.hint ?? null);
  }
  return new ApiError(status, "http_error", `The server answered ${status}.`);
}

const unauthorized = new Set<() => void>();

/** Call ``listener`` whenever a request is refused for want of a session (401). */
export function onUnauthorized(listener: () => void): () => void {
  unauthorized.add(listener);
  return () => unauthorized.delete(listener);
}

export const api = createClient<paths>({
  baseUrl: typeof window === "undefined" ? "" : window.location.origin,
  credentials: "same-origin",
  // Looked up per call, so tests can replace the global fetch.
  fetch: (request: Request) => globalThis.fetch(request),
});

api.use({
  onResponse({ response }) {
    if (response.status === 401 && !response.url.endsWith("/api/v1/auth/login")) {
      unauthorized.forEach((listener) => listener());
    }
    return undefined;
  },
});

interface FetchResult<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The data of a successful call; ApiError otherwise. */
export async function unwrap<T>(call: Promise<FetchResult<T>>): Promise<T> {
  let result: FetchResult<T>;
  try {
    result = await call;
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw e;
    throw new ApiError(0, "network", "The server cannot be reached.", "Check your connection.");
  }
  if (!result.response.ok) throw toApiError(result.response.status, result.error);
  return result.data as T;
}

/** URL of a dataset file (download or inline view). */
export function fileUrl(dataset: string, path: string, version?: number): string {
  const p = path.split("/").map(encodeURIComponent).join("/");
  const v = version ? `?version=${version}` : "";
  return `/api/v1/datasets/${encodeURIComponent(dataset)}/files/${p}${v}`;
}

/** A WebSocket URL on this server for ``path`` (ws: or wss: like the page). */
export function socketUrl(path: string): string {
  const { protocol, host } = window.location;
  return `${protocol === "https:" ? "wss:" : "ws:"}//${host}${path}`;
}
