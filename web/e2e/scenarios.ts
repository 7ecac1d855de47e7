// The browser scenarios, in order: later ones use what earlier ones made (the dataset, the
// job, the model), recorded in `State`. Each waits for what the page shows (a selector, a
// text, a response), never for a fixed time.
import { join } from "node:path";
import type { Browser, Request, Route } from "playwright-core";
import { Session, assert, editorText } from "./harness";
import type { Config } from "./harness";

export interface State {
  datasetId?: string;
  jobId?: string;
  modelRef?: string;
}

export interface Scenario {
  name: string;
  needs?: (keyof State)[];
  run: (browser: Browser, config: Config, state: State) => Promise<void>;
}

const TRAINING_TIMEOUT = 360_000;

async function withSession<T>(browser: Browser, config: Config, user: string,
                              body: (s: Session) => Promise<T>): Promise<T> {
  const s = await Session.open(browser, config);
  try {
    await s.login(user);
    const out = await body(s);
    s.checkErrors();
    return out;
  } finally {
    await s.close();
  }
}

async function openEditor(s: Session, datasetId: string, path: string): Promise<void> {
  await s.page.goto(`${s.config.url}/datasets/${datasetId}/edit?path=${encodeURIComponent(path)}`);
  await s.page.locator(".monaco-editor .view-lines").waitFor();
  // A loaded machine may take a while to load the room: wait for it, not for a clock.
  await s.page.getByRole("status").filter({ hasText: /^Live/ }).waitFor({ timeout: 60_000 });
}

export const SCENARIOS: Scenario[] = [
  {
    name: "login and logout",
    async run(browser, config) {
      const s = await Session.open(browser, config);
      try {
        const { page } = s;
        const response = await page.goto(`${config.url}/`);
        // The page runs under the server's policy (any violation fails the scenario).
        const csp = response?.headers()["content-security-policy"] ?? "";
        assert(csp.includes("script-src 'self'") && csp.includes("worker-src 'self' blob:"),
               `the UI's Content-Security-Policy is ${JSON.stringify(csp)}`);
        await page.getByLabel("Username").fill("admin");
        await page.getByLabel("Password").fill("not the password");
        await page.getByRole("button", { name: "Log in" }).click();
        await page.getByRole("alert").filter({ hasText: "Wrong username or password" }).waitFor();
        await s.shoot("login-failed");
        await s.login("admin");
        await page.getByText(/No datasets yet/).waitFor();
        await s.shoot("datasets-empty");
        await page.getByRole("button", { name: "Log out" }).click();
        await page.getByRole("heading", { name: "Log in to clowder-ml" }).waitFor();
        // The session is gone on the server too: an API call now answers 401.
        const me = await page.request.get(`${config.url}/api/v1/users/me`);
        assert(me.status() === 401, `after log out /users/me answered ${me.status()}`);
        s.checkErrors();
      } finally {
        await s.close();
      }
    },
  },
  {
    name: "create a dataset and upload a CSV by tus",
    async run(browser, config, state) {
      await withSession(browser, config, "admin", async (s) => {
        const { page } = s;
        await page.getByLabel("Name", { exact: true }).fill("reviews");
        await page.getByLabel("Description").fill("Short film reviews");
        await page.getByRole("button", { name: "Create dataset" }).click();
        await page.getByRole("heading", { name: "reviews" }).waitFor();
        state.datasetId = page.url().split("/datasets/")[1]?.split(/[?#]/)[0];
        assert(state.datasetId?.startsWith("ds_"), `no dataset id in ${page.url()}`);
        const tus = page.waitForRequest((r) => r.method() === "POST"
          && r.url().endsWith("/api/v1/uploads/"));
        await page.getByLabel("File", { exact: true }).setInputFiles(join(config.files,
          "train.csv"));
        await page.getByLabel("Path in the dataset").fill("train.csv");
        await page.getByRole("button", { name: "Start upload" }).click();
        assert((await tus).headers()["tus-resumable"] === "1.0.0", "not a tus request");
        await page.getByText(/100% .* done/).waitFor();
        await page.getByRole("table", { name: "Files" })
          .getByRole("button", { name: "train.csv" }).click();
        const preview = page.locator("table.preview");
        await preview.getByText("train.csv · CSV · 48 rows").waitFor();
        await preview.getByRole("columnheader", { name: /text/ }).waitFor();
        await s.shoot("dataset-preview");
      });
    },
  },
  {
    name: "pause an upload, reload the page, resume from the server's offset",
    needs: ["datasetId"],
    async run(browser, config, state) {
      await withSession(browser, config, "admin", async (s) => {
        const { page } = s;
        await page.goto(`${config.url}/datasets/${state.datasetId}`);
        // Hold the second chunk so the upload is caught mid-way, whatever the machine's speed.
        let patches = 0;
        let held: Route | null = null;
        let heldSeen!: () => void;
        const secondChunk = new Promise<void>((resolve) => { heldSeen = resolve; });
        await page.route("**/api/v1/uploads/*", async (route: Route) => {
          if (route.request().method() === "PATCH" && ++patches === 2) {
            held = route;
            heldSeen();
            return;
          }
          await route.continue();
        });
        const file = join(config.files, "big.bin");
        await page.getByLabel("File", { exact: true }).setInputFiles(file);
        await page.getByRole("button", { name: "Start upload" }).click();
        await secondChunk;
        await page.getByRole("button", { name: "Pause" }).click();
        await page.getByText(/paused/).waitFor();
        await (held as Route | null)?.abort().catch(() => undefined);
        await page.unroute("**/api/v1/uploads/*");
        await s.shoot("upload-paused", { narrow: false });

        await page.reload();
        await page.getByRole("heading", { name: "Unfinished uploads" }).waitFor();
        await page.getByText(/^big\.bin \(/).waitFor();
        const offsets: string[] = [];
        page.on("request", (r: Request) => {
          if (r.method() === "PATCH") offsets.push(r.headers()["upload-offset"] ?? "?");
        });
        await page.getByLabel("File", { exact: true }).setInputFiles(file);
        await page.getByRole("button", { name: "Start upload" }).click();
        await page.getByText("Resuming an earlier upload").waitFor();
        await page.getByText(/100% .* done/).waitFor();
        assert(offsets[0] === String(8 * 1024 * 1024),
               `resumed at offset ${offsets[0]}, not after the first 8 MiB chunk`);
        await page.getByRole("table", { name: "Files" })
          .getByRole("button", { name: "big.bin" }).waitFor();
      });
    },
  },
  {
    name: "upload a zip and unpack it",
    needs: ["datasetId"],
    async run(browser, config, state) {
      await withSession(browser, config, "admin", async (s) => {
        const { page } = s;
        await page.goto(`${config.url}/datasets/${state.datasetId}`);
        await page.getByLabel("File", { exact: true }).setInputFiles(join(config.files,
          "notes.zip"));
        await page.getByLabel(/Unpack the zip/).check();
        await page.getByRole("button", { name: "Start upload" }).click();
        await page.getByText(/100% .* done/).waitFor();
        const files = page.getByRole("table", { name: "Files" });
        await files.getByRole("button", { name: "notes/" }).click();
        await files.getByRole("button", { name: "a.txt" }).waitFor();
        await files.getByRole("button", { name: "b.txt" }).waitFor();
        assert(await files.getByRole("button", { name: "notes.zip" }).count() === 0,
               "the zip itself was stored");
      });
    },
  },
  {
    name: "start a fine-tune from the form and watch the loss curve draw",
    needs: ["datasetId"],
    async run(browser, config, state) {
      await withSession(browser, config, "admin", async (s) => {
        const { page } = s;
        await page.goto(`${config.url}/run`);
        await page.getByLabel("Task").selectOption("text-classification-finetune");
        await page.getByLabel("Input dataset").selectOption({ label: "admin:reviews" });
        await page.getByLabel(/Model Name/).fill("sentiment");
        await page.getByText(/Optional parameters/).click();
        const epochs = page.getByLabel(/^Epochs/);
        await epochs.fill("0");
        // The server's message, next to the field.
        await page.locator("#param-epochs-error")
          .filter({ hasText: "greater than or equal to 1" }).waitFor();
        await s.shoot("run-form-error");
        await epochs.fill("1");
        await page.locator("#param-epochs-error").waitFor({ state: "detached" });
        const set = async (label: RegExp, value: string) => page.getByLabel(label).fill(value);
        await set(/^Max Steps/, "4");
        await set(/^Batch Size/, "8");
        await set(/^Max Length/, "32");
        await set(/^Validation Split/, "0.25");
        await set(/^Checkpoint Every Steps/, "2");
        await set(/^Seed/, "7");
        await page.getByRole("button", { name: "Start job" }).click();
        await page.waitForURL(/\/jobs\/[^/]+$/);
        state.jobId = page.url().split("/jobs/")[1];
        const loss = page.locator("figure.chart", { hasText: "Loss:" });
        await loss.filter({ hasText: / [2-9]\d* points| \d{2,} points/ })
          .waitFor({ timeout: TRAINING_TIMEOUT });
        assert(await loss.locator("canvas").count() > 0, "the loss chart has no canvas");
        await s.shoot("job-training", { narrow: false });
        await page.locator("h1 .badge", { hasText: "succeeded" })
          .waitFor({ timeout: TRAINING_TIMEOUT });
        await page.getByRole("link", { name: /sentiment version 1/ }).waitFor();
        await page.getByRole("heading", { name: "Outputs" }).waitFor();
        await page.getByRole("link", { name: "model/model.safetensors" }).waitFor();
        const log = await page.getByRole("log", { name: "Job log" }).innerText();
        assert(log.length > 0 && log !== "No output yet.", "the log stayed empty");
        state.modelRef = "admin:sentiment";
        await s.shoot("job-succeeded");
      });
    },
  },
  {
    name: "model page: metrics, alias, lineage, download, reproduce",
    needs: ["modelRef"],
    async run(browser, config) {
      await withSession(browser, config, "admin", async (s) => {
        const { page } = s;
        await page.goto(`${config.url}/models`);
        await page.getByRole("link", { name: "sentiment" }).click();
        await page.getByRole("heading", { name: "admin:sentiment" }).waitFor();
        await page.getByText(/eval_accuracy \d/).first().waitFor();
        await page.getByLabel("Alias", { exact: true }).fill("production");
        await page.getByRole("button", { name: "Set alias" }).click();
        await page.locator("ul.aliases").getByText("production").waitFor();
        await page.getByText("produced_by").waitFor();
        const zip = page.getByRole("link", { name: "Download version 1 as zip" });
        const download = await page.request.get(`${config.url}${await zip.getAttribute("href")}`);
        assert(download.status() === 200
               && download.headers()["content-type"] === "application/zip", "no zip");
        await page.getByRole("button", { name: "Reproduce" }).click();
        await page.locator("ul.repros .badge").first().waitFor();
        await s.shoot("model");
      });
    },
  },
  {
    name: "the editor shows a scan marker as the user types",
    needs: ["datasetId"],
    async run(browser, config, state) {
      await withSession(browser, config, "admin", async (s) => {
        const { page } = s;
        await openEditor(s, state.datasetId!, "train.py");
        await page.locator(".monaco-editor .view-lines").click();
        await page.keyboard.type('import os; os.system("x")');
        await page.locator(".monaco-editor .squiggly-error").first().waitFor();
        await page.locator("ul.findings").getByText(/CML006/).waitFor();
        await page.getByRole("button", { name: "Save version" }).click();
        await page.getByText(/Saved as version \d+/).waitFor();
        await page.locator("ol.history").getByText(/Version \d+/).first().waitFor();
        await s.shoot("editor-scan");
      });
    },
  },
  {
    name: "the Code tab edits the task's settings file, checked against its params schema",
    needs: ["datasetId"],
    async run(browser, config) {
      await withSession(browser, config, "admin", async (s) => {
        const { page } = s;
        await page.goto(`${config.url}/run`);
        await page.getByLabel("Task").selectOption("text-classification-finetune");
        await page.getByLabel("Input dataset").selectOption({ label: "admin:reviews" });
        await page.getByRole("tab", { name: "Code" }).click();
        await page.getByLabel("File for").selectOption("params_file");
        // JSON (Monaco's JSON worker) and YAML (monaco-yaml's worker) settings files are
        // both checked against the task's params schema: batch_size must be at least 1.
        const problems = page.locator(".monaco-editor .squiggly-warning, "
          + ".monaco-editor .squiggly-error");
        for (const [path, text] of [["params.json", '{"batch_size": 0'],
          ["params.yaml", "batch_size: 0"]] as const) {
          await page.getByLabel(/^Path in reviews/).fill(path);
          await page.getByRole("button", { name: "Open", exact: true }).click();
          await page.getByText(`The job reads ${path}`).waitFor();
          await page.locator(".monaco-editor .view-lines").click();
          // Monaco closes brackets and quotes itself: type the keys and values only.
          await page.keyboard.type(text);
          await problems.first().waitFor();
          await s.shoot(`run-code-tab-${path.split(".")[1]}`, { narrow: false });
        }
        await page.getByRole("button", { name: "Save version" }).click();
        await page.getByText(/Saved as version \d+/).waitFor();
        await page.getByRole("tab", { name: "Parameters" }).click();
        await page.getByText(/Optional parameters/).click();
        const value = await page.getByLabel(/^Params File/).inputValue();
        assert(value === "params.yaml", `params_file is ${JSON.stringify(value)}`);
      });
    },
  },
  {
    name: "two browser contexts co-edit one file; a reader gets a read-only editor",
    needs: ["datasetId"],
    async run(browser, config, state) {
      const id = state.datasetId!;
      const a = await Session.open(browser, config);
      const b = await Session.open(browser, config);
      const r = await Session.open(browser, config);
      try {
        await a.login("admin");
        // The owner shares the dataset: carol may write, dave may only read.
        await a.page.goto(`${config.url}/datasets/${id}`);
        for (const [user, permission] of [["carol", "write"], ["dave", "read"]] as const) {
          await a.page.getByLabel("User", { exact: true }).fill(user);
          await a.page.getByLabel("Permission").selectOption(permission);
          await a.page.getByRole("button", { name: "Share" }).click();
          await a.page.locator("ul.shares").getByText(`${user} (${permission})`).waitFor();
        }
        await b.login("carol");
        await Promise.all([openEditor(a, id, "config.py"), openEditor(b, id, "config.py")]);
        await a.page.getByRole("status").filter({ hasText: "2 editors" }).waitFor();
        await a.page.locator(".monaco-editor .view-lines").click();
        await b.page.locator(".monaco-editor .view-lines").click();
        await a.page.keyboard.type("# shared settings");
        await b.page.locator(".view-lines", { hasText: "# shared settings" }).waitFor();
        // Then both type at once: A above the line, B below it.
        await Promise.all([
          (async () => {
            await a.page.keyboard.press("Control+Home");
            await a.page.keyboard.type("alpha = 1\n");
          })(),
          (async () => {
            await b.page.keyboard.press("Control+End");
            await b.page.keyboard.type("\nbeta = 2");
          })(),
        ]);
        const both = (t: string) => t.includes("alpha = 1") && t.includes("beta = 2");
        for (const s of [a, b]) {
          await s.page.waitForFunction(() => {
            const el = document.querySelector(".monaco-editor .view-lines") as HTMLElement | null;
            const t = (el?.innerText ?? "").replace(/\u00a0/g, " ");
            return t.includes("alpha = 1") && t.includes("beta = 2");
          });
        }
        const [ta, tb] = [await editorText(a.page), await editorText(b.page)];
        assert(both(ta) && ta === tb, `the editors differ: ${JSON.stringify([ta, tb])}`);
        await a.shoot("coedit-a");
        await b.shoot("coedit-b", { narrow: false });

        await r.login("dave");
        await openEditor(r, id, "config.py");
        // A newcomer sees everyone who has the file open, not only those who move.
        await r.page.getByRole("status").filter({ hasText: "3 editors" }).waitFor();
        await r.page.getByText("You have read-only access").waitFor();
        assert(await r.page.getByRole("button", { name: "Save version" }).count() === 0,
               "a reader has a save button");
        await r.page.locator(".monaco-editor .view-lines").click();
        await r.page.keyboard.type("zzz");
        // Typing is refused (Monaco says so), and the text stays the shared one.
        assert(!(await editorText(r.page)).includes("zzz"), "a reader's typing went in");
        await a.page.keyboard.type(" # seen");
        await r.page.getByText("# seen").waitFor();
        await r.shoot("coedit-reader", { narrow: false });
        for (const s of [a, b, r]) s.checkErrors();
      } finally {
        await Promise.all([a.close(), b.close(), r.close()]);
      }
    },
  },
  {
    name: "another user gets 404 pages for the first user's dataset and job",
    needs: ["datasetId"],
    async run(browser, config, state) {
      await withSession(browser, config, "mallory", async (s) => {
        const { page } = s;
        await page.getByText(/No datasets yet/).waitFor();
        for (const path of [`/datasets/${state.datasetId}`,
          `/datasets/${state.datasetId}/edit?path=train.csv`,
          ...(state.jobId ? [`/jobs/${state.jobId}`] : []),
          ...(state.modelRef ? [`/models/${encodeURIComponent(state.modelRef)}`] : [])]) {
          await page.goto(`${config.url}${path}`);
          await page.getByRole("heading", { name: "404 · Not found" }).waitFor();
        }
        await s.shoot("not-found");
      });
    },
  },
  {
    name: "a running job's live log, then cancel",
    async run(browser, config) {
      await withSession(browser, config, "admin", async (s) => {
        const { page } = s;
        await page.goto(`${config.url}/run?task=test-sleep`);
        await page.getByText(/Optional parameters/).click();
        await page.getByLabel(/^Seconds/).fill("300");
        await page.getByLabel(/^Lines/).fill("3");
        await page.getByRole("button", { name: "Start job" }).click();
        await page.waitForURL(/\/jobs\/[^/]+$/);
        await page.getByRole("log", { name: "Job log" }).getByText("line 2").waitFor({
          timeout: 120_000 });
        await page.locator("h1 .badge", { hasText: "running" }).waitFor();
        await page.getByRole("button", { name: "Cancel job" }).click();
        await page.locator("h1 .badge", { hasText: "cancelled" }).waitFor({ timeout: 60_000 });
        await page.locator("ol.events").getByText("cancelled").first().waitFor();
        await s.shoot("job-cancelled", { narrow: false });
        await page.goto(`${config.url}/jobs`);
        await page.getByRole("table").getByText("cancelled").first().waitFor();
        await s.shoot("jobs");
      });
    },
  },
  {
    name: "the reproduce verdict is shown",
    needs: ["modelRef"],
    async run(browser, config) {
      await withSession(browser, config, "admin", async (s) => {
        const { page } = s;
        await page.goto(`${config.url}/models/${encodeURIComponent("admin:sentiment")}?v=1`);
        await page.locator("ul.repros .badge", { hasText: /identical|differs|failed/ })
          .waitFor({ timeout: TRAINING_TIMEOUT });
        const verdict = await page.locator("ul.repros .badge").first().innerText();
        assert(verdict === "identical", `reproduce said ${verdict}: ${
          await page.locator("ul.repros li").first().innerText()}`);
        await s.shoot("reproduced", { narrow: false });
      });
    },
  },
];
