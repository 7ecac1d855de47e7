// The signed-in user. The session is the server's HttpOnly cookie; this only mirrors who
// it belongs to (GET /users/me) and drops back to the login form on any 401.
import { createContext, useCallback, useContext, useEffect, useMemo, useState } from "react";
import type { ReactNode } from "react";
import { api, onUnauthorized, unwrap } from "./api/client";
import type { User } from "./api/client";

type Status = "checking" | "anonymous" | "signed-in";

interface Auth {
  status: Status;
  user: User | null;
  login: (username: string, password: string) => Promise<void>;
  logout: () => Promise<void>;
}

const AuthContext = createContext<Auth | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const [user, setUser] = useState<User | null>(null);
  const [status, setStatus] = useState<Status>("checking");

  useEffect(() => {
    let live = true;
    unwrap(api.GET("/api/v1/users/me")).then(
      (me) => {
        if (!live) return;
        setUser(me);
        setStatus("signed-in");
      },
      () => {
        if (live) setStatus("anonymous");
      },
    );
    const off = onUnauthorized(() => {
      setUser(null);
      setStatus("anonymous");
    });
    return () => {
      live = false;
      off();
    };
  }, []);

  const login = useCallback(async (username: string, password: string) => {
    const me = await unwrap(api.POST("/api/v1/auth/login", { body: { username, password } }));
    setUser(me);
    setStatus("signed-in");
  }, []);

  const logout = useCallback(async () => {
    try {
      await unwrap(api.POST("/api/v1/auth/logout"));
    } finally {
      setUser(null);
      setStatus("anonymous");
    }
  }, []);

  const value = useMemo(() => ({ status, user, login, logout }), [status, user, login, logout]);
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): Auth {
  const auth = useContext(AuthContext);
  if (!auth) throw new Error("useAuth outside AuthProvider");
  return auth;
}
