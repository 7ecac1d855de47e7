// A model: its versions with metrics, aliases (set and move), two versions side by side,
// a version's lineage, the zip download, and reproduce with the verdict.
import { useEffect, useState } from "react";
import type { FormEvent } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { api, unwrap } from "../api/client";
import type { Model, ModelVersion, Reproduction } from "../api/client";
import { ErrorMessage, Loading, LoadError } from "../components/Status";
import { CompareTable } from "../components/CompareTable";
import type { CompareOut } from "../components/CompareTable";
import { ValueTree } from "../components/ValueTree";
import { formatBytes, formatNumber, formatTime } from "../lib/format";
import { useLoad } from "../lib/useLoad";

export function ModelPage() {
  const { name = "" } = useParams();
  const model = useLoad((signal) => unwrap(api.GET("/api/v1/models/{name}", {
    params: { path: { name } }, signal })), [name]);
  const versions = useLoad((signal) => unwrap(api.GET("/api/v1/models/{name}/versions", {
    params: { path: { name } }, signal })), [name]);
  if (model.error) return <LoadError error={model.error} />;
  if (!model.data || !versions.data) return <Loading />;
  const reload = () => {
    model.reload();
    versions.reload();
  };
  return <ModelView model={model.data} versions={versions.data} reload={reload} />;
}

function ModelView({ model, versions, reload }: {
  model: Model; versions: ModelVersion[]; reload: () => void;
}) {
  const [query, setQuery] = useSearchParams();
  const selected = Number(query.get("v")) || model.latest || undefined;
  const writable = model.permission === "write";
  const select = (v: number) => setQuery({ v: String(v) });
  return (
    <>
      <header className="page-head">
        <h1>{model.ref}</h1>
        <p className="muted">
          {model.versions} {model.versions === 1 ? "version" : "versions"}
          {model.best_metric ? ` · “best” follows ${model.best_metric} (${model.best_mode})` : ""}
          {writable ? "" : " · read only"}
        </p>
        {model.description ? <p>{model.description}</p> : null}
      </header>
      <section className="card" aria-labelledby="mv-title">
        <h2 id="mv-title">Versions</h2>
        <div className="scroll">
          <table>
            <thead>
              <tr>
                <th scope="col">Version</th>
                <th scope="col">Created</th>
                <th scope="col">Metrics</th>
                <th scope="col">Aliases</th>
                <th scope="col">Base</th>
                <th scope="col"><span className="sr-only">Actions</span></th>
              </tr>
            </thead>
            <tbody>
              {[...versions].reverse().map((v) => (
                <tr key={v.version} aria-selected={v.version === selected}>
                  <td>
                    <button type="button" className="link" onClick={() => select(v.version)}
                            aria-label={`Show version ${v.version}`}>{v.version}</button>
                  </td>
                  <td>{formatTime(v.created_at)}</td>
                  <td><Metrics metrics={v.metrics} /></td>
                  <td>{v.aliases.join(", ") || "—"}</td>
                  <td>{v.base_model}</td>
                  <td className="actions">
                    <a href={`/api/v1/models/${encodeURIComponent(model.ref)}/versions/${
                      v.version}/archive`} download
                       aria-label={`Download version ${v.version} as zip`}>Download zip</a>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </section>
      <div className="columns">
        <div className="main-col">
          {selected ? <VersionCard model={model} number={selected} /> : null}
          <CompareCard model={model} versions={versions} />
        </div>
        <div className="side-col">
          <AliasesCard model={model} versions={versions} writable={writable} onChange={reload} />
        </div>
      </div>
    </>
  );
}

const SHOWN_METRICS = ["eval_accuracy", "eval_macro_f1", "eval_loss", "train_loss"];

function Metrics({ metrics }: { metrics: Record<string, unknown> }) {
  const names = SHOWN_METRICS.filter((n) => n in metrics);
  const shown = names.length ? names : Object.keys(metrics).slice(0, 4);
  if (shown.length === 0) return <span className="muted">—</span>;
  return (
    <span className="metrics">
      {shown.map((n) => <span key={n}>{n} {formatNumber(metrics[n])}</span>)}
    </span>
  );
}

function VersionCard({ model, number }: { model: Model; number: number }) {
  const path = { name: model.ref, number };
  const version = useLoad((signal) => unwrap(api.GET("/api/v1/models/{name}/versions/{number}",
    { params: { path }, signal })), [model.ref, number]);
  const lineage = useLoad((signal) => unwrap(api.GET(
    "/api/v1/models/{name}/versions/{number}/lineage", { params: { path }, signal })),
  [model.ref, number]);
  const repros = useLoad((signal) => unwrap(api.GET(
    "/api/v1/models/{name}/versions/{number}/reproductions", { params: { path }, signal })),
  [model.ref, number]);
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);
  const pending = (repros.data ?? []).some((r) => r.verdict === "pending");
  const { reload } = repros;
  useEffect(() => {
    // A verdict is ready when the re-run job ends; follow it while one is pending.
    if (!pending) return;
    const timer = setInterval(reload, 3000);
    return () => clearInterval(timer);
  }, [pending, reload]);

  async function reproduce() {
    setBusy(true);
    setError(undefined);
    try {
      await unwrap(api.POST("/api/v1/models/{name}/versions/{number}/reproduce", {
        params: { path }, body: {} }));
      reload();
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  }

  const v = version.data;
  return (
    <section className="card" aria-labelledby="version-title">
      <h2 id="version-title">Version {number}</h2>
      <LoadError error={version.error} />
      {v ? (
        <dl className="facts">
          <div><dt>Task</dt><dd>{v.task}</dd></div>
          <div><dt>Base model</dt><dd>{v.base_model}</dd></div>
          <div><dt>Job</dt><dd>{v.job_id ? <Link to={`/jobs/${v.job_id}`}>{v.job_id}</Link>
            : "—"}</dd></div>
          <div><dt>Size</dt><dd>{formatBytes(v.size)}</dd></div>
          <div><dt>Digest</dt><dd><code className="wrap">{v.digest}</code></dd></div>
          <div><dt>Metrics</dt><dd><ValueTree value={v.metrics} /></dd></div>
        </dl>
      ) : null}
      <h3>Reproduce</h3>
      <p className="muted small">Runs the version's job again from its manifest and compares
        the weights bit for bit.</p>
      <button type="button" onClick={() => void reproduce()} disabled={busy}>
        {busy ? "Starting…" : "Reproduce"}
      </button>
      <ErrorMessage error={error} />
      <ul className="repros">
        {(repros.data ?? []).map((r) => <ReproItem key={r.id} r={r} />)}
      </ul>
      <h3>Lineage</h3>
      <LoadError error={lineage.error} />
      {lineage.data ? <ValueTree value={lineage.data} /> : null}
    </section>
  );
}

function ReproItem({ r }: { r: Reproduction }) {
  return (
    <li>
      <span className={`badge verdict-${r.verdict}`}>{r.verdict}</span>{" "}
      <Link to={`/jobs/${r.job_id}`}>job</Link> · {r.why}
      {r.differences.length ? <ValueTree value={r.differences} /> : null}
    </li>
  );
}

function CompareCard({ model, versions }: { model: Model; versions: ModelVersion[] }) {
  const numbers = versions.map((v) => v.version);
  const [a, setA] = useState(numbers[numbers.length - 2] ?? numbers[0] ?? 0);
  const [b, setB] = useState(numbers[numbers.length - 1] ?? 0);
  const [asked, setAsked] = useState<[number, number] | null>(null);
  const result = useLoad(async (signal) => asked ? unwrap(api.GET("/api/v1/models/{name}/compare",
    { params: { path: { name: model.ref }, query: { versions: asked.join(",") } }, signal }))
    : null, [model.ref, asked?.[0], asked?.[1]]);
  if (numbers.length < 2) return null;
  const out = result.data as CompareOut | null | undefined;
  return (
    <section className="card" aria-labelledby="compare-title">
      <h2 id="compare-title">Compare versions</h2>
      <form className="inline-form" onSubmit={(e: FormEvent) => {
        e.preventDefault();
        setAsked([a, b]);
      }}>
        <label>First<select value={a} onChange={(e) => setA(Number(e.target.value))}>
          {numbers.map((n) => <option key={n} value={n}>{n}</option>)}</select></label>
        <label>Second<select value={b} onChange={(e) => setB(Number(e.target.value))}>
          {numbers.map((n) => <option key={n} value={n}>{n}</option>)}</select></label>
        <button type="submit" disabled={a === b}>Compare</button>
      </form>
      <ErrorMessage error={result.error} />
      {out ? <CompareTable out={out} /> : null}
    </section>
  );
}

function AliasesCard({ model, versions, writable, onChange }: {
  model: Model; versions: ModelVersion[]; writable: boolean; onChange: () => void;
}) {
  const aliases = useLoad((signal) => unwrap(api.GET("/api/v1/models/{name}/aliases", {
    params: { path: { name: model.ref } }, signal })), [model.ref, model.aliases]);
  const [alias, setAlias] = useState("production");
  const [version, setVersion] = useState(model.latest ?? 1);
  const [reason, setReason] = useState("");
  const [error, setError] = useState<Error>();

  async function set(e: FormEvent) {
    e.preventDefault();
    setError(undefined);
    try {
      await unwrap(api.PUT("/api/v1/models/{name}/aliases/{alias}", {
        params: { path: { name: model.ref, alias } }, body: { version, reason } }));
      setReason("");
      onChange();
      aliases.reload();
    } catch (err) {
      setError(err as Error);
    }
  }

  async function remove(name: string) {
    setError(undefined);
    try {
      await unwrap(api.DELETE("/api/v1/models/{name}/aliases/{alias}", {
        params: { path: { name: model.ref, alias: name } } }));
      onChange();
      aliases.reload();
    } catch (err) {
      setError(err as Error);
    }
  }

  return (
    <section className="card" aria-labelledby="aliases-title">
      <h2 id="aliases-title">Aliases</h2>
      <ul className="aliases">
        {(aliases.data?.aliases ?? []).map((a) => (
          <li key={a.alias}>
            <strong>{a.alias}</strong> → version {a.version}{" "}
            {writable ? (
              <button type="button" className="link" onClick={() => void remove(a.alias)}
                      aria-label={`Remove alias ${a.alias}`}>remove</button>
            ) : null}
          </li>
        ))}
        {aliases.data && aliases.data.aliases.length === 0 ? (
          <li className="muted">None yet (“latest” always names the newest version).</li>
        ) : null}
      </ul>
      {writable ? (
        <form className="stack" onSubmit={(e) => void set(e)}>
          <label>Alias<input value={alias} required maxLength={64}
                             onChange={(e) => setAlias(e.target.value)} /></label>
          <label>Version<select value={version} onChange={(e) => setVersion(Number(e.target.value))}>
            {versions.map((v) => <option key={v.version} value={v.version}>{v.version}</option>)}
          </select></label>
          <label>Reason<input value={reason} maxLength={500}
                              onChange={(e) => setReason(e.target.value)} /></label>
          <button type="submit">Set alias</button>
        </form>
      ) : null}
      <ErrorMessage error={error} />
      {aliases.data && aliases.data.history.length > 0 ? (
        <details>
          <summary>History ({aliases.data.history.length})</summary>
          <ol className="history">
            {aliases.data.history.map((h, i) => (
              <li key={i}>{h.alias}: {h.from_version ?? "—"} → {h.to_version ?? "removed"}
                <div className="muted small">{h.by ?? "rule"} · {formatTime(h.at)}
                  {h.reason ? ` · ${h.reason}` : ""}</div></li>
            ))}
          </ol>
        </details>
      ) : null}
    </section>
  );
}
