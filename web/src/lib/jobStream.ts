// The live view of a job over its WebSocket (/api/v1/jobs/{id}/ws): the job on every
// change, log text, metric points, then "end". The server sends everything from the start
// on each connection, so a reconnect starts from a clean slate.
import { useEffect, useReducer } from "react";
import { socketUrl } from "../api/client";
import type { Job, Metric } from "../api/client";
import { addPoints } from "./metrics";
import type { MetricSeries } from "./metrics";

export interface JobStream {
  job: Job | null;
  log: string;
  series: MetricSeries;
  ended: boolean;
  error: string | null;
  connected: boolean;
}

type Message =
  | { type: "job"; job: Job }
  | { type: "end"; job: Job }
  | { type: "log"; data: string }
  | { type: "metrics"; points: Metric[] }
  | { type: "error"; error: { message: string } };

type Action = Message | { type: "open" } | { type: "closed" };

export const initialStream: JobStream = {
  job: null, log: "", series: new Map(), ended: false, error: null, connected: false };

/** Bounded so a chatty job cannot make the page sluggish; the full log is downloadable. */
export const MAX_LOG_CHARS = 512 * 1024;

export function reduce(state: JobStream, action: Action): JobStream {
  switch (action.type) {
    case "open":
      return { ...initialStream, job: state.job, connected: true };
    case "closed":
      return { ...state, connected: false };
    case "job":
      return { ...state, job: action.job };
    case "end":
      return { ...state, job: action.job, ended: true };
    case "log": {
      const log = state.log + action.data;
      return { ...state, log: log.length > MAX_LOG_CHARS ? log.slice(-MAX_LOG_CHARS) : log };
    }
    case "metrics":
      return { ...state, series: addPoints(state.series, action.points) };
    case "error":
      return { ...state, error: action.error.message, ended: true };
    default:
      return state;
  }
}

export function useJobStream(jobId: string): JobStream {
  const [state, dispatch] = useReducer(reduce, initialStream);
  useEffect(() => {
    let ws: WebSocket | null = null;
    let stopped = false;
    let ended = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let delay = 500;
    const connect = () => {
      ws = new WebSocket(socketUrl(`/api/v1/jobs/${encodeURIComponent(jobId)}/ws`));
      ws.onopen = () => {
        delay = 500;
        dispatch({ type: "open" });
      };
      ws.onmessage = (event) => {
        const message = JSON.parse(String(event.data)) as Message;
        if (message.type === "end" || message.type === "error") ended = true;
        dispatch(message);
      };
      ws.onclose = () => {
        dispatch({ type: "closed" });
        if (!stopped && !ended) {
          retry = setTimeout(connect, delay);
          delay = Math.min(delay * 2, 10_000);
        }
      };
    };
    connect();
    return () => {
      stopped = true;
      if (retry) clearTimeout(retry);
      ws?.close();
    };
  }, [jobId]);
  return state;
}
