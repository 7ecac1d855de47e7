import { NavLink, Outlet } from "react-router";
import { useAuth } from "../auth";

const LINKS = [
  { to: "/datasets", label: "Datasets" },
  { to: "/run", label: "Run a task" },
  { to: "/jobs", label: "Jobs" },
  { to: "/models", label: "Models" },
];

export function Layout() {
  const { user, logout } = useAuth();
  return (
    <div className="app">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">clowder-ml</span>
        <nav aria-label="Main">
          <ul>
            {LINKS.map((l) => (
              <li key={l.to}>
                <NavLink to={l.to}>{l.label}</NavLink>
              </li>
            ))}
          </ul>
        </nav>
        <div className="who">
          <span aria-label="Signed in as">{user?.username}</span>
          <button type="button" className="link" onClick={() => void logout()}>
            Log out
          </button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Outlet />
      </main>
    </div>
  );
}
