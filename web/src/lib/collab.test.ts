import { describe, expect, it } from "vitest";
import { closeReason, colorFor, roomOf } from "./collab";

describe("co-editing helpers", () => {
  it("names the room by dataset id and path, each segment encoded", () => {
    expect(roomOf("ds_1", "src/my file.py")).toBe("ds_1/src/my%20file.py");
  });

  it("explains refusals (4000 + status) and ignores network drops", () => {
    expect(closeReason(4404, "")).toMatch(/does not exist/);
    expect(closeReason(4403, "Cross-origin WebSocket refused.")).toBe(
      "Cross-origin WebSocket refused.");
    expect(closeReason(1006, "")).toBeNull();
  });

  it("gives a user the same color every time", () => {
    expect(colorFor("carol")).toBe(colorFor("carol"));
  });
});
