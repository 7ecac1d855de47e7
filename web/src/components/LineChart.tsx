// A uPlot line chart of some metric series, redrawn as points arrive. The figure's caption
// says what is drawn and how many points (for screen readers, and for tests to wait on).
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { aligned, pointCount } from "../lib/metrics";
import type { MetricSeries } from "../lib/metrics";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
const HEIGHT = 220;
const STEP_TICKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000,
  50_000, 100_000, 200_000, 500_000, 1_000_000];

interface Props {
  title: string;
  series: MetricSeries;
  names: string[];
}

export function LineChart({ title, series, names }: Props) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const key = names.join("|");
  const data = aligned(series, names);
  const points = pointCount(series, names);

  useEffect(() => {
    const el = host.current;
    if (!el || names.length === 0) return;
    const opts: uPlot.Options = {
      width: Math.max(200, el.clientWidth),
      height: HEIGHT,
      scales: { x: { time: false } },
      // Steps are whole numbers: no ticks between them.
      axes: [{ label: "step", incrs: STEP_TICKS }, {}],
      series: [
        { label: "step" },
        ...names.map((n, i) => ({
          label: n,
          stroke: COLORS[i % COLORS.length],
          width: 2,
          spanGaps: true,
          points: { show: true, size: 5 },
        })),
      ],
    };
    const u = new uPlot(opts, aligned(series, names) as uPlot.AlignedData, el);
    plot.current = u;
    const resize = new ResizeObserver(() => u.setSize({ width: Math.max(200, el.clientWidth),
      height: HEIGHT }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      u.destroy();
      plot.current = null;
    };
    // Rebuilt only when the set of series changes; new points go through setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);

  useEffect(() => {
    plot.current?.setData(data as uPlot.AlignedData);
  }, [data]);

  return (
    <figure className="chart" data-points={points}>
      <figcaption>
        {title}: {names.length ? `${names.join(", ")} · ${points} points` : "no points yet"}
      </figcaption>
      <div ref={host} className="chart-host" />
    </figure>
  );
}
