// A fetch stand-in for component tests: answers by "METHOD /path" with JSON (the server
// itself is exercised by the browser tests and the Python suite).
import { vi } from "vitest";

export type Answer = { status?: number; body?: unknown };
export type Routes = Record<string, Answer | ((request: Request) => Answer)>;

export function mockFetch(routes: Routes) {
  const calls: { method: string; path: string; body: string }[] = [];
  const fetchMock = vi.fn(async (input: Request) => {
    const url = new URL(input.url);
    const key = `${input.method} ${url.pathname}`;
    const body = input.method === "GET" ? "" : await input.clone().text();
    calls.push({ method: input.method, path: url.pathname + url.search, body });
    const route = routes[key];
    if (!route) {
      return new Response(JSON.stringify({ error: { code: "not_found",
        message: `No route ${key} in the test.`, hint: null } }), { status: 404,
        headers: { "Content-Type": "application/json" } });
    }
    const answer = typeof route === "function" ? route(input) : route;
    const status = answer.status ?? 200;
    return new Response(status === 204 ? null : JSON.stringify(answer.body ?? null),
      { status, headers: { "Content-Type": "application/json" } });
  });
  vi.stubGlobal("fetch", fetchMock);
  return calls;
}
