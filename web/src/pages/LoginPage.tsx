import { useState } from "react";
import type { FormEvent } from "react";
import { useAuth } from "../auth";
import { ErrorMessage } from "../components/Status";

export function LoginPage() {
  const { login } = useAuth();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<Error>();
  const [busy, setBusy] = useState(false);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await login(username, password);
    } catch (err) {
      setError(err as Error);
      setBusy(false);
    }
  }

  return (
    <main id="main" className="login">
      <form onSubmit={(e) => void submit(e)} aria-labelledby="login-title" className="card">
        <h1 id="login-title">Log in to clowder-ml</h1>
        <label>
          Username
          <input autoComplete="username" required value={username}
                 onChange={(e) => setUsername(e.target.value)} />
        </label>
        <label>
          Password
          <input type="password" autoComplete="current-password" required value={password}
                 onChange={(e) => setPassword(e.target.value)} />
        </label>
        <ErrorMessage error={error} />
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Logging in…" : "Log in"}
        </button>
      </form>
    </main>
  );
}
