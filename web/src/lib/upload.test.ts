import { describe, expect, it } from "vitest";
import { fingerprintOf, metadataOf, uploadErrorMessage } from "./upload";

const file = { name: "reviews.csv", size: 1234, lastModified: 42 };

describe("upload identity", () => {
  it("remembers an upload per file and target, so a reload resumes the right one", () => {
    const a = fingerprintOf(file, { dataset: "ds_1", path: "train.csv", unpack: false, prefix: "" });
    expect(fingerprintOf(file, { dataset: "ds_1", path: "train.csv", unpack: false, prefix: "x" }))
      .toBe(a);
    expect(fingerprintOf(file, { dataset: "ds_2", path: "train.csv", unpack: false, prefix: "" }))
      .not.toBe(a);
    expect(fingerprintOf(file, { dataset: "ds_1", path: "val.csv", unpack: false, prefix: "" }))
      .not.toBe(a);
    expect(fingerprintOf({ ...file, lastModified: 43 },
      { dataset: "ds_1", path: "train.csv", unpack: false, prefix: "" })).not.toBe(a);
  });

  it("sends the metadata keys the server's tus endpoint reads", () => {
    expect(metadataOf(file, { dataset: "ds_1", path: "a/b.csv", unpack: false, prefix: "a" }))
      .toEqual({ dataset: "ds_1", filename: "reviews.csv", path: "a/b.csv" });
    expect(metadataOf(file, { dataset: "ds_1", path: "", unpack: true, prefix: "imgs" }))
      .toEqual({ dataset: "ds_1", filename: "reviews.csv", unpack: "true", prefix: "imgs" });
  });
});

describe("uploadErrorMessage", () => {
  it("shows the server's message and hint", () => {
    const error = Object.assign(new Error("tus: unexpected response"), {
      originalResponse: { getBody: () => JSON.stringify({ error: { code: "permission_denied",
        message: "You have read-only access.", hint: "Ask its owner." } }) },
    });
    expect(uploadErrorMessage(error)).toBe("You have read-only access. Ask its owner.");
  });

  it("falls back to the first line of the client's message", () => {
    expect(uploadErrorMessage(new Error("tus: failed to upload\nmore"))).toBe("tus: failed to upload");
  });
});
