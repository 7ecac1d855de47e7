import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { CompareTable } from "./CompareTable";

describe("CompareTable", () => {
  it("puts two versions side by side: params that differ and every metric", () => {
    render(<CompareTable out={{
      versions: [1, 2],
      params_differing: { learning_rate: [5e-5, 1e-4] },
      metrics: { eval_accuracy: [0.75, 0.875] },
      data: [["reviews@1"], ["reviews@2"]],
      base_model: ["minilm-l6", "minilm-l6"],
      digest: ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"],
    }} />);
    const table = screen.getByRole("table", { name: "Versions side by side" });
    expect(within(table).getAllByRole("columnheader").map((h) => h.textContent))
      .toEqual(["Field", "Version 1", "Version 2"]);
    const row = (name: string) => within(table).getByRole("row", { name: new RegExp(name) });
    expect(within(row("param learning_rate")).getAllByRole("cell").map((c) => c.textContent))
      .toEqual(["5.000e-5", "1.000e-4"]);
    expect(within(row("eval_accuracy")).getAllByRole("cell").map((c) => c.textContent))
      .toEqual(["0.7500", "0.8750"]);
    expect(within(row("data")).getAllByRole("cell").map((c) => c.textContent))
      .toEqual(["reviews@1", "reviews@2"]);
  });
});
