// The app shell against a fetch stand-in: log in with the server's error shown, the pages
// a user may see, and the 404 page for what they may not.
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { MemoryRouter } from "react-router";
import { describe, expect, it } from "vitest";
import { App } from "./App";
import { AuthProvider } from "./auth";
import { mockFetch } from "./test/fetch";

const me = { id: 2, username: "carol", is_admin: false, created_at: "2026-01-01T00:00:00Z" };
const unauthorized = { status: 401, body: { error: { code: "authentication_required",
  message: "Authentication required.", hint: null } } };

function renderAt(path: string) {
  return render(
    <MemoryRouter initialEntries={[path]}>
      <AuthProvider><App /></AuthProvider>
    </MemoryRouter>,
  );
}

describe("App", () => {
  it("asks for a login, shows the server's refusal, then the page asked for", async () => {
    let signedIn = false;
    let attempts = 0;
    const calls = mockFetch({
      "GET /api/v1/users/me": () => (signedIn ? { body: me } : unauthorized),
      "POST /api/v1/auth/login": () => {
        attempts += 1;
        if (attempts === 1) {
          return { status: 401, body: { error: { code: "invalid_credentials",
            message: "Wrong username or password.", hint: null } } };
        }
        signedIn = true;
        return { body: me };
      },
      "GET /api/v1/datasets": { body: [] },
    });
    renderAt("/datasets");
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText("Username"), "carol");
    await user.type(screen.getByLabelText("Password"), "wrong");
    await user.click(screen.getByRole("button", { name: "Log in" }));
    expect((await screen.findByRole("alert")).textContent).toContain(
      "Wrong username or password.");
    await user.click(screen.getByRole("button", { name: "Log in" }));
    expect(await screen.findByRole("heading", { name: "Datasets", level: 1 })).toBeTruthy();
    expect(screen.getByText(/No datasets yet/)).toBeTruthy();
    const login = calls.find((c) => c.path === "/api/v1/auth/login");
    expect(JSON.parse(login?.body ?? "{}")).toEqual({ username: "carol", password: "wrong" });
  });

  it("shows the 404 page for a dataset the user cannot see", async () => {
    mockFetch({
      "GET /api/v1/users/me": { body: me },
      "GET /api/v1/datasets/ds_theirs": { status: 404, body: { error: { code: "not_found",
        message: "No dataset 'ds_theirs'.", hint: null } } },
    });
    renderAt("/datasets/ds_theirs");
    expect(await screen.findByRole("heading", { name: "404 · Not found" })).toBeTruthy();
    expect(screen.getByText("No dataset 'ds_theirs'.")).toBeTruthy();
  });

  it("shows the 404 page for an unknown address", async () => {
    mockFetch({ "GET /api/v1/users/me": { body: me } });
    renderAt("/no/such/page");
    expect(await screen.findByRole("heading", { name: "404 · Not found" })).toBeTruthy();
    expect(screen.getByRole("navigation", { name: "Main" })).toBeTruthy();
  });
});
