// Metric points of a job, grouped into the series the charts draw (x: the training step).
import type { Metric } from "../api/client";

/** name -> step -> value (a later point for the same step replaces the earlier one). */
export type MetricSeries = Map<string, Map<number, number | null>>;

export function addPoints(series: MetricSeries, points: readonly Metric[]): MetricSeries {
  const next: MetricSeries = new Map(series);
  for (const p of points) {
    const byStep = new Map(next.get(p.name) ?? []);
    byStep.set(p.step, p.value ?? null);
    next.set(p.name, byStep);
  }
  return next;
}

/** Curves of losses (training and eval). */
export function lossNames(series: MetricSeries): string[] {
  return [...series.keys()].filter((n) => n.includes("loss")).sort();
}

/** Evaluation scores other than loss (accuracy, F1...). */
export function evalNames(series: MetricSeries): string[] {
  return [...series.keys()].filter((n) => n.startsWith("eval_") && !n.includes("loss")).sort();
}

/** uPlot's aligned data: the union of steps, then one column per name (null: no point). */
export function aligned(series: MetricSeries, names: readonly string[],
): [number[], ...(number | null)[][]] {
  const steps = new Set<number>();
  for (const n of names) for (const s of series.get(n)?.keys() ?? []) steps.add(s);
  const xs = [...steps].sort((a, b) => a - b);
  const columns = names.map((n) => {
    const byStep = series.get(n);
    return xs.map((x) => byStep?.get(x) ?? null);
  });
  return [xs, ...columns];
}

/** The latest value of each series, by name. */
export function latest(series: MetricSeries): { name: string; step: number; value: number | null }[] {
  return [...series.entries()].map(([name, byStep]) => {
    const step = Math.max(...byStep.keys());
    return { name, step, value: byStep.get(step) ?? null };
  }).sort((a, b) => a.name.localeCompare(b.name));
}

export function pointCount(series: MetricSeries, names: readonly string[]): number {
  return names.reduce((n, name) => n + (series.get(name)?.size ?? 0), 0);
}
