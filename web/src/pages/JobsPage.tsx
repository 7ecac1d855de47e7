import { useEffect } from "react";
import { Link, useSearchParams } from "react-router";
import { api, unwrap } from "../api/client";
import type { Job } from "../api/client";
import { StateBadge, TERMINAL } from "../components/StateBadge";
import { Loading, LoadError } from "../components/Status";
import { formatTime } from "../lib/format";
import { useLoad } from "../lib/useLoad";

const STATES = ["pending", "submitted", "running", "succeeded", "failed", "cancelled"] as const;
type State = (typeof STATES)[number];
const REFRESH_MS = 5000;

export function JobsPage() {
  const [query, setQuery] = useSearchParams();
  const raw = query.get("state");
  const state = STATES.find((s) => s === raw) as State | undefined;
  const jobs = useLoad((signal) => unwrap(api.GET("/api/v1/jobs", {
    params: { query: state ? { state } : {} }, signal })), [state]);
  const active = (jobs.data ?? []).some((j: Job) => !TERMINAL.has(j.state));
  const { reload } = jobs;
  useEffect(() => {
    // While jobs run, the list follows their states (the job page itself is live).
    if (!active) return;
    const timer = setInterval(reload, REFRESH_MS);
    return () => clearInterval(timer);
  }, [active, reload]);

  return (
    <>
      <h1>Jobs</h1>
      <div className="inline-form">
        <label>
          State
          <select value={state ?? ""} onChange={(e) => setQuery(e.target.value
            ? { state: e.target.value } : {})}>
            <option value="">all</option>
            {STATES.map((s) => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
        <Link to="/run" className="button">Run a task</Link>
      </div>
      <LoadError error={jobs.error} />
      {jobs.loading && !jobs.data ? <Loading /> : null}
      {jobs.data && jobs.data.length === 0 ? <p className="muted">No jobs.</p> : null}
      {jobs.data && jobs.data.length > 0 ? (
        <div className="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Task</th>
                <th scope="col">State</th>
                <th scope="col">Owner</th>
                <th scope="col">Created</th>
                <th scope="col">Ended</th>
              </tr>
            </thead>
            <tbody>
              {[...jobs.data].reverse().map((j) => (
                <tr key={j.id}>
                  <td><Link to={`/jobs/${j.id}`}><code>{j.id.slice(0, 12)}</code></Link></td>
                  <td>{j.task}</td>
                  <td><StateBadge state={j.state} />{j.reason ? (
                    <div className="muted small">{j.reason}</div>) : null}</td>
                  <td>{j.owner}</td>
                  <td>{formatTime(j.created_at)}</td>
                  <td>{formatTime(j.ended_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : null}
    </>
  );
}
