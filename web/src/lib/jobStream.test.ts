import { describe, expect, it } from "vitest";
import type { Job } from "../api/client";
import { initialStream, MAX_LOG_CHARS, reduce } from "./jobStream";

const job = (state: string) => ({ id: "j1", task: "t", state } as unknown as Job);

describe("the live job reducer", () => {
  it("follows job, log, metrics and end messages", () => {
    let s = reduce(initialStream, { type: "open" });
    s = reduce(s, { type: "job", job: job("running") });
    s = reduce(s, { type: "log", data: "step 1\n" });
    s = reduce(s, { type: "metrics", points: [{ id: 1, name: "loss", step: 1, value: 0.5,
      at: "" }] });
    s = reduce(s, { type: "end", job: job("succeeded") });
    expect(s.connected).toBe(true);
    expect(s.log).toBe("step 1\n");
    expect(s.series.get("loss")?.get(1)).toBe(0.5);
    expect(s.ended).toBe(true);
    expect(s.job?.state).toBe("succeeded");
  });

  it("starts over on a reconnect (the server resends everything)", () => {
    let s = reduce(initialStream, { type: "log", data: "old" });
    s = reduce(s, { type: "open" });
    expect(s.log).toBe("");
  });

  it("keeps only the end of a very long log", () => {
    const s = reduce(initialStream, { type: "log", data: "x".repeat(MAX_LOG_CHARS + 10) });
    expect(s.log.length).toBe(MAX_LOG_CHARS);
  });
});
