// Loading, error and not-found states, shared by every page.
import { Link } from "react-router";
import { ApiError } from "../api/client";

export function Loading({ what = "Loading" }: { what?: string }) {
  return (
    <p className="muted" role="status">
      {what}…
    </p>
  );
}

export function ErrorMessage({ error }: { error: Error | null | undefined }) {
  if (!error) return null;
  const hint = error instanceof ApiError ? error.hint : null;
  return (
    <div className="error" role="alert">
      <strong>{error.message}</strong>
      {hint ? <span> {hint}</span> : null}
    </div>
  );
}

/** The 404 page: shown for unknown routes and for things the user cannot see. */
export function NotFound({ message }: { message?: string }) {
  return (
    <section className="not-found" aria-labelledby="not-found-title">
      <h1 id="not-found-title">404 · Not found</h1>
      <p>{message ?? "There is nothing at this address, or you do not have access to it."}</p>
      <p>
        <Link to="/datasets">Go to your datasets</Link>
      </p>
    </section>
  );
}

/** NotFound for a 404, the error otherwise; nothing when there is no error. */
export function LoadError({ error }: { error: Error | undefined }) {
  if (!error) return null;
  if (error instanceof ApiError && error.notFound) return <NotFound message={error.message} />;
  return <ErrorMessage error={error} />;
}
