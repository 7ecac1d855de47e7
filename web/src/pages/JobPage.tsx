import { useState } from "react";
import { Link, useParams } from "react-router";
import { api, unwrap } from "../api/client";
import type { Job } from "../api/client";
import { LineChart } from "../components/LineChart";
import { LogView } from "../components/LogView";
import { StateBadge, TERMINAL } from "../components/StateBadge";
import { ErrorMessage, Loading, LoadError } from "../components/Status";
import { formatBytes, formatNumber, formatTime } from "../lib/format";
import { useJobStream } from "../lib/jobStream";
import { evalNames, latest, lossNames } from "../lib/metrics";
import { useLoad } from "../lib/useLoad";

export function JobPage() {
  const { id = "" } = useParams();
  // The REST view answers 404 for jobs the user cannot see; the socket then is not needed.
  const first = useLoad((signal) => unwrap(api.GET("/api/v1/jobs/{job_id}", {
    params: { path: { job_id: id } }, signal })), [id]);
  if (first.error) return <LoadError error={first.error} />;
  if (!first.data) return <Loading />;
  return <LiveJob id={id} initial={first.data} />;
}

function LiveJob({ id, initial }: { id: string; initial: Job }) {
  const stream = useJobStream(id);
  const job = stream.job ?? initial;
  const terminal = TERMINAL.has(job.state);
  const events = useLoad((signal) => unwrap(api.GET("/api/v1/jobs/{job_id}/events", {
    params: { path: { job_id: id } }, signal })), [id, job.state, job.cancel_requested]);
  const outputs = useLoad(async (signal) => terminal ? unwrap(api.GET(
    "/api/v1/jobs/{job_id}/outputs", { params: { path: { job_id: id } }, signal })) : [],
  [id, terminal]);
  const [cancelError, setCancelError] = useState<Error>();
  const [cancelling, setCancelling] = useState(false);

  async function cancel() {
    setCancelling(true);
    setCancelError(undefined);
    try {
      await unwrap(api.POST("/api/v1/jobs/{job_id}/cancel", { params: { path: { job_id: id } } }));
    } catch (err) {
      setCancelError(err as Error);
    } finally {
      setCancelling(false);
    }
  }

  const losses = lossNames(stream.series);
  const evals = evalNames(stream.series);
  const model = (job.result as { model?: { name?: string; version?: number } } | null)?.model;
  return (
    <>
      <header className="page-head">
        <h1>{job.task} <StateBadge state={job.state} /></h1>
        <p className="muted">
          Job <code>{job.id}</code> · {job.owner} · created {formatTime(job.created_at)}
          {job.ended_at ? ` · ended ${formatTime(job.ended_at)}` : ""}
          {stream.connected ? " · live" : terminal ? "" : " · reconnecting"}
        </p>
        {job.reason ? <p className={job.state === "failed" ? "error" : "note"}>{job.reason}</p>
          : null}
        {job.waiting_for ? (
          <p className="note">Waiting: {job.waiting_for}
            {job.queue_position ? ` (position ${job.queue_position} in the queue)` : ""}</p>
        ) : null}
        {model?.name ? (
          <p className="note">Registered <Link to={`/models/${encodeURIComponent(model.name)}`}>
            {model.name} version {model.version}</Link>.</p>
        ) : null}
        {!terminal ? (
          <p>
            <button type="button" onClick={() => void cancel()}
                    disabled={cancelling || job.cancel_requested}>
              {job.cancel_requested ? "Cancelling…" : "Cancel job"}
            </button>
          </p>
        ) : null}
        <ErrorMessage error={cancelError} />
        {stream.error ? <p className="error" role="alert">{stream.error}</p> : null}
      </header>
      <div className="columns">
        <div className="main-col">
          {!terminal || stream.series.size > 0 ? (
          <section className="card" aria-labelledby="curves-title">
            <h2 id="curves-title">Curves</h2>
            <div className="charts">
              <LineChart title="Loss" series={stream.series} names={losses} />
              <LineChart title="Evaluation" series={stream.series} names={evals} />
            </div>
            {stream.series.size > 0 ? (
              <table className="compact" aria-label="Latest metrics">
                <thead><tr><th scope="col">Metric</th><th scope="col">Step</th>
                  <th scope="col">Value</th></tr></thead>
                <tbody>
                  {latest(stream.series).map((m) => (
                    <tr key={m.name}><td>{m.name}</td><td>{m.step}</td>
                      <td>{formatNumber(m.value)}</td></tr>
                  ))}
                </tbody>
              </table>
            ) : null}
          </section>
          ) : null}
          <section className="card" aria-labelledby="log-title">
            <div className="card-head">
              <h2 id="log-title">Log</h2>
              <a href={`/api/v1/jobs/${id}/logs`} download={`${id}.log`}>Download log</a>
            </div>
            <LogView text={stream.log} label="Job log" />
          </section>
        </div>
        <div className="side-col">
          <section className="card" aria-labelledby="events-title">
            <h2 id="events-title">Events</h2>
            <ErrorMessage error={events.error} />
            <ol className="events">
              {(events.data ?? []).map((e, i) => (
                <li key={i}>
                  <StateBadge state={e.state} /> {e.message}
                  <div className="muted small">{formatTime(e.at)}</div>
                </li>
              ))}
            </ol>
          </section>
          {terminal ? (
            <section className="card" aria-labelledby="outputs-title">
              <h2 id="outputs-title">Outputs</h2>
              <ErrorMessage error={outputs.error} />
              {outputs.data && outputs.data.length === 0 ? <p className="muted">None.</p> : null}
              <ul className="outputs">
                {(outputs.data ?? []).map((o) => (
                  <li key={o.path}>
                    <a href={`/api/v1/jobs/${id}/outputs/${o.path.split("/").map(
                      encodeURIComponent).join("/")}`} download>{o.path}</a>{" "}
                    <span className="muted small">{formatBytes(o.size)}</span>
                  </li>
                ))}
              </ul>
            </section>
          ) : null}
          <section className="card">
            <details>
              <summary>Spec and result</summary>
              <pre className="json">{JSON.stringify({ spec: job.spec, result: job.result },
                null, 2)}</pre>
            </details>
          </section>
        </div>
      </div>
    </>
  );
}
