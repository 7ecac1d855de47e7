// Resumable uploads over tus 1.0 (tus-js-client) to the server's /api/v1/uploads/.
//
// Each upload is remembered in localStorage under a fingerprint of the file *and* its target
// (dataset, path), so choosing the same file again after a page reload (or a pause, or a
// lost connection) continues from the server's offset instead of starting over.
import * as tus from "tus-js-client";

export interface UploadTarget {
  /** The dataset's id. */
  dataset: string;
  /** Path of the file in the dataset (ignored when unpacking a zip). */
  path: string;
  /** Unpack a zip archive into ``prefix`` instead of storing it as a file. */
  unpack: boolean;
  prefix: string;
}

export interface UploadEvents {
  onProgress: (sent: number, total: number) => void;
  onSuccess: () => void;
  onError: (error: Error) => void;
}

/** A stored, unfinished upload (as tus-js-client keeps it). */
export interface Unfinished {
  key: string;
  path: string;
  size: number;
  startedAt: string;
  uploadUrl: string | null;
}

const CHUNK_BYTES = 8 * 1024 * 1024;
const PREFIX = "cml-upload";

export function fingerprintOf(file: Pick<File, "name" | "size" | "lastModified">,
                              target: UploadTarget): string {
  const where = target.unpack ? `unpack:${target.prefix}` : `file:${target.path}`;
  return [PREFIX, target.dataset, where, file.name, file.size, file.lastModified].join("|");
}

export function metadataOf(file: Pick<File, "name">, target: UploadTarget): Record<string, string> {
  const meta: Record<string, string> = { dataset: target.dataset, filename: file.name };
  if (target.unpack) {
    meta.unpack = "true";
    if (target.prefix) meta.prefix = target.prefix;
  } else {
    meta.path = target.path;
  }
  return meta;
}

/** The server's message from a failed tus request, or the client's own. */
export function uploadErrorMessage(error: Error): string {
  const response = (error as tus.DetailedError).originalResponse;
  const body = response?.getBody();
  if (body) {
    try {
      const parsed = JSON.parse(body) as { error?: { message?: string; hint?: string } };
      if (parsed.error?.message) {
        return parsed.error.hint ? `${parsed.error.message} ${parsed.error.hint}`
          : parsed.error.message;
      }
    } catch {
      // not JSON: fall through
    }
  }
  return error.message.split("\n")[0] ?? "The upload failed.";
}

export class ResumableUpload {
  private readonly upload: tus.Upload;
  private running = false;

  constructor(file: File, target: UploadTarget, events: UploadEvents) {
    this.upload = new tus.Upload(file, {
      endpoint: `${window.location.origin}/api/v1/uploads/`,
      chunkSize: CHUNK_BYTES,
      retryDelays: [0, 1000, 3000, 5000],
      metadata: metadataOf(file, target),
      fingerprint: async (f) => fingerprintOf(f as File, target),
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onProgress: (sent, total) => events.onProgress(sent, total),
      onSuccess: () => {
        this.running = false;
        events.onSuccess();
      },
      onError: (error) => {
        this.running = false;
        events.onError(new Error(uploadErrorMessage(error)));
      },
    });
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** Start, continuing a stored unfinished upload of the same file and target if any.
   *  Returns whether it resumed one. */
  async start(): Promise<boolean> {
    const previous = await this.upload.findPreviousUploads();
    const last = previous[previous.length - 1];
    if (last) this.upload.resumeFromPreviousUpload(last);
    this.running = true;
    this.upload.start();
    return last !== undefined;
  }

  /** Stop sending; what the server has is kept, ``resume`` continues from there. */
  async pause(): Promise<void> {
    this.running = false;
    await this.upload.abort(false);
  }

  resume(): void {
    this.running = true;
    this.upload.start();
  }
}

/** Unfinished uploads to ``dataset`` that this browser remembers (newest first). */
export async function unfinishedUploads(dataset: string): Promise<Unfinished[]> {
  const storage = tus.defaultOptions.urlStorage;
  if (!storage) return [];
  const all = await storage.findAllUploads();
  return all
    .filter((u) => u.metadata?.dataset === dataset)
    .map((u) => ({
      key: u.urlStorageKey,
      path: u.metadata?.unpack === "true" ? `${u.metadata?.filename ?? "archive"} (unpack)`
        : (u.metadata?.path ?? "?"),
      size: u.size ?? 0,
      startedAt: u.creationTime,
      uploadUrl: u.uploadUrl ?? null,
    }))
    .sort((a, b) => b.startedAt.localeCompare(a.startedAt));
}

/** Forget a remembered upload (the server expires its part on its own). */
export async function forgetUpload(key: string): Promise<void> {
  await tus.defaultOptions.urlStorage?.removeUpload(key);
}
