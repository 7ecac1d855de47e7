// Run a task: pick it and its input dataset; the form is generated from the task's params
// schema (GET /api/v1/tasks) and checked by the server as the user types; the Code tab
// co-edits the task's code or settings file (config.py, preprocess.py, train.py) in the
// dataset, with the scan's findings as markers.
import { lazy, Suspense, useEffect, useMemo, useState } from "react";
import type { FormEvent } from "react";
import { Link, useNavigate, useSearchParams } from "react-router";
import { api, unwrap } from "../api/client";
import type { Dataset, ScanResult, Task } from "../api/client";
import { useAuth } from "../auth";
import { SaveBar } from "../components/SaveBar";
import { ScanFindings } from "../components/ScanFindings";
import { SchemaForm } from "../components/SchemaForm";
import { ErrorMessage, Loading, LoadError } from "../components/Status";
import { debounce } from "../lib/debounce";
import {
  errorsByField, FILE_PARAMS, fieldsOf, initialValues, paramsOf, settingsFileSchema,
} from "../lib/schemaForm";
import type { FormValues, JsonSchema } from "../lib/schemaForm";
import { useLoad } from "../lib/useLoad";

const CollabEditor = lazy(() => import("../editor/CollabEditor"));
const CHECK_DELAY_MS = 400;

export function RunPage() {
  const [query, setQuery] = useSearchParams();
  const tasks = useLoad((signal) => unwrap(api.GET("/api/v1/tasks", { signal })), []);
  const datasets = useLoad((signal) => unwrap(api.GET("/api/v1/datasets", { signal })), []);
  const taskName = query.get("task") ?? "";
  const datasetId = query.get("dataset") ?? "";
  const task = tasks.data?.find((t) => t.name === taskName);
  const dataset = datasets.data?.find((d) => d.id === datasetId);

  const choose = (key: string, value: string) => {
    // From the latest query, not this render's: two quick choices must both stick.
    setQuery((prev) => {
      const next = new URLSearchParams(prev);
      if (value) next.set(key, value);
      else next.delete(key);
      return next;
    }, { replace: true });
  };

  if (tasks.error || datasets.error) return <LoadError error={tasks.error ?? datasets.error} />;
  if (!tasks.data || !datasets.data) return <Loading />;
  return (
    <>
      <h1>Run a task</h1>
      <div className="card inline-form">
        <label>
          Task
          <select value={taskName} onChange={(e) => choose("task", e.target.value)}>
            <option value="">Choose a task…</option>
            {tasks.data.map((t) => <option key={t.name} value={t.name}>{t.name}</option>)}
          </select>
        </label>
        <label>
          Input dataset
          <select value={datasetId} onChange={(e) => choose("dataset", e.target.value)}>
            <option value="">(none)</option>
            {datasets.data.map((d) => (
              <option key={d.id} value={d.id}>{d.owner}:{d.name}</option>
            ))}
          </select>
        </label>
        {task ? <p className="muted grow">{task.summary}</p> : null}
      </div>
      {task ? <TaskRun key={task.name} task={task} dataset={dataset} /> : (
        <p className="muted">Choose a task to see its parameters.</p>
      )}
    </>
  );
}

function TaskRun({ task, dataset }: { task: Task; dataset: Dataset | undefined }) {
  const navigate = useNavigate();
  const schema = task.params_schema as JsonSchema;
  const fields = useMemo(() => fieldsOf(schema), [schema]);
  const [values, setValues] = useState<FormValues>(() => initialValues(fields));
  const [serverErrors, setServerErrors] = useState<Record<string, string>>({});
  const [localErrors, setLocalErrors] = useState<Record<string, string>>({});
  const [tab, setTab] = useState<"form" | "code">("form");
  const [cpus, setCpus] = useState("1");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<Error>();

  const check = useMemo(() => debounce((current: FormValues) => {
    const { params, errors } = paramsOf(fields, current);
    setLocalErrors(errors);
    unwrap(api.POST("/api/v1/tasks/{task}/validate", {
      params: { path: { task: task.name } }, body: { params } }))
      .then((out) => setServerErrors(errorsByField(out.errors)))
      .catch(() => undefined);
  }, CHECK_DELAY_MS), [fields, task.name]);
  useEffect(() => () => check.cancel(), [check]);

  const change = (name: string, value: string | boolean) => {
    setValues((v) => {
      const next = { ...v, [name]: value };
      check(next);
      return next;
    });
  };

  async function submit(e: FormEvent) {
    e.preventDefault();
    check.cancel();
    setError(undefined);
    const { params, errors } = paramsOf(fields, values);
    setLocalErrors(errors);
    if (Object.keys(errors).length > 0) return;
    setBusy(true);
    try {
      const verdict = await unwrap(api.POST("/api/v1/tasks/{task}/validate", {
        params: { path: { task: task.name } }, body: { params } }));
      setServerErrors(errorsByField(verdict.errors));
      if (!verdict.valid) {
        setTab("form");
        return;
      }
      const job = await unwrap(api.POST("/api/v1/jobs", { body: {
        task: task.name,
        params,
        inputs: dataset ? [{ kind: "dataset", ref: dataset.id }] : [],
        resources: { cpus: Number(cpus) || 1 },
      } }));
      navigate(`/jobs/${job.id}`);
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  }

  const fileParams = fields.filter((f) => f.name in FILE_PARAMS);
  const errors = { ...serverErrors, ...localErrors };
  // The Code tab's editor has its own form (Save version), so it sits outside the run form:
  // forms cannot nest.
  return (
    <div className="run-form">
      <div role="tablist" aria-label="Parameters or code" className="tabs">
        <button type="button" role="tab" id="tab-form" aria-controls="panel-form"
                aria-selected={tab === "form"} onClick={() => setTab("form")}>
          Parameters
        </button>
        <button type="button" role="tab" id="tab-code" aria-controls="panel-code"
                aria-selected={tab === "code"} onClick={() => setTab("code")}
                disabled={fileParams.length === 0}
                title={fileParams.length === 0 ? "This task takes no code or settings file"
                  : undefined}>
          Code
        </button>
      </div>
      {tab === "code" ? (
        <div role="tabpanel" id="panel-code" aria-labelledby="tab-code" className="card">
          <CodeTab task={task} dataset={dataset} fileParams={fileParams.map((f) => f.name)}
                   values={values} onUse={change} />
        </div>
      ) : null}
      <form onSubmit={(e) => void submit(e)} noValidate aria-label={`Run ${task.name}`}>
        <div role="tabpanel" id="panel-form" aria-labelledby="tab-form"
             hidden={tab !== "form"} className="card">
          <SchemaForm fields={fields} values={values} errors={errors} onChange={change} />
        </div>
        <div className="card inline-form">
          <label>
            CPUs
            <input type="number" min={0.1} step="any" value={cpus}
                   onChange={(e) => setCpus(e.target.value)} />
          </label>
          <button type="submit" className="primary" disabled={busy}>
            {busy ? "Starting…" : "Start job"}
          </button>
          <ErrorMessage error={error} />
        </div>
      </form>
    </div>
  );
}

interface CodeTabProps {
  task: Task;
  dataset: Dataset | undefined;
  fileParams: string[];
  values: FormValues;
  onUse: (param: string, path: string) => void;
}

function CodeTab({ task, dataset, fileParams, values, onUse }: CodeTabProps) {
  const { user } = useAuth();
  const [param, setParam] = useState(fileParams[0] ?? "");
  const current = typeof values[param] === "string" ? (values[param] as string) : "";
  const [path, setPath] = useState(current || FILE_PARAMS[param]?.suggested || "config.py");
  const [open, setOpen] = useState<string | null>(null);
  const [scan, setScan] = useState<ScanResult | null>(null);
  const [synced, setSynced] = useState(false);

  if (!dataset) {
    return <p className="muted">Choose the input dataset first: the file lives in it.</p>;
  }
  const readOnly = dataset.permission !== "write";
  return (
    <div className="stack">
      <div className="inline-form">
        <label>
          File for
          <select value={param} onChange={(e) => {
            setParam(e.target.value);
            setPath(FILE_PARAMS[e.target.value]?.suggested ?? path);
            setOpen(null);
          }}>
            {fileParams.map((p) => (
              <option key={p} value={p}>{FILE_PARAMS[p]?.label ?? p} ({p})</option>
            ))}
          </select>
        </label>
        <label className="grow">
          Path in {dataset.name}
          <input value={path} onChange={(e) => setPath(e.target.value)} />
        </label>
        <button type="button" onClick={() => {
          setOpen(path);
          onUse(param, path);
        }} disabled={!path.trim()}>
          Open
        </button>
      </div>
      {open ? (
        <>
          <p className="muted small">
            The job reads <code>{open}</code> from the dataset's latest version as{" "}
            <code>{param}</code>: save a version before starting it.{" "}
            <Link to={`/datasets/${dataset.id}/edit?path=${encodeURIComponent(open)}&task=${
              encodeURIComponent(task.name)}`}>Open full page</Link>
          </p>
          {!readOnly ? (
            <SaveBar datasetId={dataset.id} path={open} disabled={!synced}
                     onSaved={() => undefined} />
          ) : null}
          <Suspense fallback={<Loading what="Opening the editor" />}>
            <CollabEditor datasetId={dataset.id} path={open} readOnly={readOnly}
                          userName={user?.username ?? "?"}
                          schema={/\.(json|ya?ml)$/i.test(open)
                            ? settingsFileSchema(task.params_schema) : undefined}
                          onState={(s) => setSynced(s.synced)} onScan={setScan} />
          </Suspense>
          <ScanFindings result={scan} />
        </>
      ) : null}
    </div>
  );
}
