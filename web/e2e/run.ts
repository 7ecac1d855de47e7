// Runs the browser scenarios in one chromium against a running server and writes one
// result per scenario as JSON (tests/web/test_browser.py starts the server, runs this, and
// turns each result into a test). Usage: tsx e2e/run.ts RESULTS.json
import { writeFileSync } from "node:fs";
import { launch, readConfig } from "./harness";
import { SCENARIOS } from "./scenarios";
import type { State } from "./scenarios";

interface Result {
  name: string;
  ok: boolean;
  skipped: boolean;
  error: string | null;
  seconds: number;
}

async function main(): Promise<void> {
  const out = process.argv[2];
  if (!out) throw new Error("usage: tsx e2e/run.ts RESULTS.json");
  const config = readConfig();
  const browser = await launch();
  const state: State = {};
  const results: Result[] = [];
  const save = () => writeFileSync(out, JSON.stringify(results, null, 2));
  try {
    for (const scenario of SCENARIOS) {
      if (config.only.length && !config.only.some((o) => scenario.name.includes(o))) continue;
      const missing = (scenario.needs ?? []).filter((k) => !state[k]);
      const started = Date.now();
      let error: string | null = missing.length
        ? `skipped: an earlier scenario did not make ${missing.join(", ")}` : null;
      if (!error) {
        try {
          await scenario.run(browser, config, state);
        } catch (e) {
          error = e instanceof Error ? (e.stack ?? e.message) : String(e);
        }
      }
      const seconds = (Date.now() - started) / 1000;
      results.push({ name: scenario.name, ok: error === null, skipped: missing.length > 0,
        error, seconds });
      console.log(`${error === null ? "ok  " : "FAIL"} ${scenario.name} (${seconds.toFixed(1)} s)`);
      if (error) console.log(error);
      save();
    }
  } finally {
    await browser.close();
    save();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(2);
});
