// Two (or more) model versions side by side: base model, data, the params that differ,
// every metric, the weights' digest (GET /models/{name}/compare).
import { formatNumber } from "../lib/format";

export interface CompareOut {
  versions: number[];
  params_differing: Record<string, unknown[]>;
  metrics: Record<string, unknown[]>;
  data: string[][];
  base_model: string[];
  digest: string[];
}

export function CompareTable({ out }: { out: CompareOut }) {
  const row = (label: string, values: unknown[], key = label) => (
    <tr key={key}>
      <th scope="row">{label}</th>
      {values.map((v, i) => <td key={i}>{formatNumber(Array.isArray(v) ? v.join(", ") : v)}</td>)}
    </tr>
  );
  const differing = Object.entries(out.params_differing ?? {});
  return (
    <div className="scroll">
      <table aria-label="Versions side by side">
        <thead>
          <tr>
            <th scope="col"><span className="sr-only">Field</span></th>
            {out.versions.map((v) => <th key={v} scope="col">Version {v}</th>)}
          </tr>
        </thead>
        <tbody>
          {row("base model", out.base_model)}
          {row("data", out.data)}
          {differing.length === 0 ? (
            <tr><th scope="row">params</th><td colSpan={out.versions.length}>the same</td></tr>
          ) : differing.map(([k, vs]) => row(`param ${k}`, vs, `p-${k}`))}
          {Object.entries(out.metrics).map(([k, vs]) => row(k, vs, `m-${k}`))}
          {row("weights digest", out.digest.map((d) => d.slice(0, 12)))}
        </tbody>
      </table>
    </div>
  );
}
