// Browser test harness: one Debian chromium (never a downloaded browser) driven by
// playwright-core, fresh contexts per user, screenshots at 1280x800 and on a narrow window.
import { join } from "node:path";
import { chromium } from "playwright-core";
import type { Browser, BrowserContext, Page } from "playwright-core";

export const WIDE = { width: 1280, height: 800 };
export const NARROW = { width: 390, height: 844 };

export interface Config {
  url: string;
  /** username -> password */
  users: Record<string, string>;
  /** Files the scenarios upload (prepared by the test). */
  files: string;
  shots: string;
  /** Run only scenarios whose name contains one of these. */
  only: string[];
}

export function readConfig(): Config {
  const env = (name: string): string => {
    const value = process.env[name];
    if (!value) throw new Error(`${name} is not set`);
    return value;
  };
  return {
    url: env("E2E_URL").replace(/\/$/, ""),
    users: JSON.parse(env("E2E_USERS")) as Record<string, string>,
    files: env("E2E_FILES"),
    shots: env("E2E_SHOTS"),
    only: (process.env.E2E_ONLY ?? "").split(",").filter(Boolean),
  };
}

/** Headless chromium with a fresh profile (playwright makes a new temporary user data
 *  dir for every launch) and no background traffic to the outside world. */
export async function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

export class Session {
  readonly errors: string[] = [];

  private constructor(readonly context: BrowserContext, readonly page: Page,
                      readonly config: Config) {}

  static async open(browser: Browser, config: Config): Promise<Session> {
    const context = await browser.newContext({ viewport: WIDE, acceptDownloads: true });
    context.setDefaultTimeout(20_000);
    const page = await context.newPage();
    const session = new Session(context, page, config);
    // Any CSP violation or uncaught error fails the scenario that caused it.
    page.on("pageerror", (e) => session.errors.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) {
        session.errors.push(`console: ${m.text()}`);
      }
    });
    return session;
  }

  async login(username: string): Promise<void> {
    const password = this.config.users[username];
    if (password === undefined) throw new Error(`no password for ${username}`);
    await this.page.goto(`${this.config.url}/datasets`);
    await this.page.getByLabel("Username").fill(username);
    await this.page.getByLabel("Password").fill(password);
    await this.page.getByRole("button", { name: "Log in" }).click();
    await this.page.getByRole("heading", { name: "Datasets", exact: true }).waitFor();
  }

  /** Screenshots of the current page, wide and narrow (the viewport is restored). On the
   *  narrow window nothing may stick out sideways (tables scroll inside their own box). */
  async shoot(name: string, { narrow = true }: { narrow?: boolean } = {}): Promise<void> {
    await this.page.screenshot({ path: join(this.config.shots, `${name}-1280.png`) });
    if (narrow) {
      await this.page.setViewportSize(NARROW);
      await this.page.screenshot({ path: join(this.config.shots, `${name}-narrow.png`),
        fullPage: true });
      const wide = await overflowing(this.page);
      await this.page.setViewportSize(WIDE);
      assert(wide.length === 0, `${name}: wider than a ${NARROW.width}px window: ${
        wide.join("; ")}`);
    }
  }

  checkErrors(): void {
    if (this.errors.length) throw new Error(this.errors.join("\n"));
  }

  async close(): Promise<void> {
    await this.context.close();
  }
}

// Runs in the page. A string, not a function: tsx would wrap named inner functions in a
// helper (__name) that does not exist in the page.
const OVERFLOWING = `(() => {
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= width) return [];
  // Inside a scrolling box is fine, unless the element is positioned against something
  // outside it (an absolute box escapes its scroller unless the scroller is positioned).
  function inScroller(el) {
    let escapes = getComputedStyle(el).position === "absolute";
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const style = getComputedStyle(p);
      if (style.overflowX !== "visible" && !escapes) return true;
      if (escapes && style.position !== "static") escapes = false;
    }
    return false;
  }
  const out = [];
  for (const el of Array.from(document.querySelectorAll("body *"))) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > width + 1 && !inScroller(el)) {
      const cls = typeof el.className === "string" && el.className
        ? "." + el.className.split(" ").join(".") : "";
      out.push(el.tagName.toLowerCase() + cls + " (right " + Math.round(r.right) + "): "
        + (el.textContent || "").slice(0, 40));
    }
    if (out.length >= 5) break;
  }
  return out.length ? out : ["the page is " + document.documentElement.scrollWidth + "px wide"];
})()`;

/** Elements that make the page wider than the window (outside any scrolling box). */
export async function overflowing(page: Page): Promise<string[]> {
  return page.evaluate(OVERFLOWING) as Promise<string[]>;
}

export async function editorText(page: Page): Promise<string> {
  // Monaco renders lines as spans with non-breaking spaces.
  const text = await page.locator(".monaco-editor .view-lines").innerText();
  return text.replace(/\u00a0/g, " ");
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}
