import { describe, expect, it } from "vitest";
import type { Metric } from "../api/client";
import { addPoints, aligned, evalNames, latest, lossNames, pointCount } from "./metrics";

const at = "2026-01-01T00:00:00Z";
const point = (id: number, name: string, step: number, value: number | null): Metric =>
  ({ id, name, step, value, at });

describe("metric series", () => {
  const series = addPoints(new Map(), [
    point(1, "loss", 1, 0.9), point(2, "learning_rate", 1, 1e-4), point(3, "loss", 2, 0.7),
    point(4, "eval_loss", 2, 0.8), point(5, "eval_accuracy", 2, 0.5), point(6, "loss", 3, 0.6),
  ]);

  it("splits losses from evaluation scores", () => {
    expect(lossNames(series)).toEqual(["eval_loss", "loss"]);
    expect(evalNames(series)).toEqual(["eval_accuracy"]);
  });

  it("aligns series on the union of steps, with gaps as null", () => {
    expect(aligned(series, ["eval_loss", "loss"])).toEqual([[1, 2, 3], [null, 0.8, null],
      [0.9, 0.7, 0.6]]);
    expect(pointCount(series, ["eval_loss", "loss"])).toBe(4);
  });

  it("replaces a point reported again for the same step and keeps the input", () => {
    const again = addPoints(series, [point(7, "loss", 3, 0.5)]);
    expect(again.get("loss")?.get(3)).toBe(0.5);
    expect(series.get("loss")?.get(3)).toBe(0.6);
    expect(latest(again).find((m) => m.name === "loss")).toEqual({ name: "loss", step: 3,
      value: 0.5 });
  });
});
