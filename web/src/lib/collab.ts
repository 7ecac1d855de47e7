// Pure helpers of the co-editing client (kept apart from Monaco so they are unit-tested).

/** The co-editing room of a dataset file, as the server's WebSocket path names it. */
export function roomOf(datasetId: string, path: string): string {
  return `${encodeURIComponent(datasetId)}/${path.split("/").map(encodeURIComponent).join("/")}`;
}

/** What a close code from the documents WebSocket means (4000 + HTTP status). */
export function closeReason(code: number, reason: string): string | null {
  if (code < 4000 || code >= 5000) return null; // a network drop: y-websocket reconnects
  const status = code - 4000;
  if (reason) return reason;
  if (status === 401) return "Your session ended; log in again.";
  if (status === 403) return "You may not open this document.";
  if (status === 404) return "This document does not exist or you have no access to it.";
  return `The server refused the document (${status}).`;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"];

/** A stable color for a user name (remote cursors). */
export function colorFor(name: string): string {
  let h = 0;
  for (const ch of name) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return COLORS[h % COLORS.length] ?? "#1f77b4";
}
