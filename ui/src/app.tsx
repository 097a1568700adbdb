import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import type { AppEvent, AppState, SessionView, TunnelView } from "./bindings";
import { call, onEvent } from "./api";
import { clock, nowUnix, relative } from "./format";
import { SignIn } from "./screens/SignIn";
import { Databases } from "./screens/Databases";
import { Tunnels } from "./screens/Tunnels";
import { Queries } from "./screens/Queries";
import { Session } from "./screens/Session";
import { Toasts, type Toast } from "./toasts";

export type Route =
  | { screen: "databases" }
  | { screen: "tunnels" }
  | { screen: "queries"; tunnel: number }
  | { screen: "session" };

/** Warn this long before the session ends (matches the Rust side). */
const EXPIRY_WARNING_SECS = 10 * 60;

export function App() {
  const [state, setState] = useState<AppState | null>(null);
  const [route, setRoute] = useState<Route>({ screen: "databases" });
  const [tunnels, setTunnels] = useState<TunnelView[]>([]);
  const [toasts, setToasts] = useState<Toast[]>([]);
  const [relogin, setRelogin] = useState(false);
  const [now, setNow] = useState(nowUnix());
  const nextToast = useRef(1);

  const toast = useCallback((text: string, tone: Toast["tone"] = "info") => {
    const id = nextToast.current++;
    setToasts((t) => [...t.slice(-3), { id, text, tone }]);
    setTimeout(() => setToasts((t) => t.filter((x) => x.id !== id)), tone === "error" ? 9000 : 4500);
  }, []);

  const refreshState = useCallback(async () => {
    try {
      setState(await call("app_state"));
    } catch (e) {
      toast((e as { message: string }).message, "error");
    }
  }, [toast]);

  const refreshTunnels = useCallback(async () => {
    try {
      setTunnels(await call("tunnels"));
    } catch {
      /* shown by the screens that act */
    }
  }, []);

  useEffect(() => {
    refreshState();
    refreshTunnels();
    const unlisten = onEvent((event: AppEvent) => {
      switch (event.type) {
        case "tunnels_changed":
          refreshTunnels();
          break;
        case "session_changed":
          refreshState();
          break;
        case "guard":
          toast(event.message + (event.query ? ` ${event.query}` : ""), event.action === "failed" ? "error" : "warn");
          break;
        case "restore_failed":
          toast(`The tunnel to ${event.database} did not reopen: ${event.message}`, "error");
          break;
        case "session_expiring":
          refreshState();
          break;
        case "sso_started":
          break;
      }
    });
    const tick = setInterval(() => setNow(nowUnix()), 15000);
    return () => {
      clearInterval(tick);
      unlisten.then((f) => f());
    };
  }, [refreshState, refreshTunnels, toast]);

  if (state === null) {
    return <div class="loading" aria-busy="true" />;
  }

  const session = state.session;
  const signedIn = session !== null && !session.expired;
  if (!signedIn && !relogin) {
    return (
      <>
        <SignIn
          state={state}
          expired={session?.expired ?? false}
          onSignedIn={async () => {
            await refreshState();
            setRoute({ screen: "databases" });
          }}
        />
        <Toasts toasts={toasts} />
      </>
    );
  }

  const left = session ? session.expires_unix - now : 0;
  const nav = (screen: Route["screen"], label: string, badge?: number) => (
    <button
      class="nav"
      aria-current={route.screen === screen || (screen === "tunnels" && route.screen === "queries") ? "page" : undefined}
      onClick={() => setRoute({ screen } as Route)}
    >
      {label}
      {badge ? <span class="count" aria-label={`${badge} running`}>{badge}</span> : null}
    </button>
  );

  return (
    <div class="shell">
      <aside class="sidebar">
        <div class="brand">
          <span class="mark" aria-hidden="true" />
          Postern
        </div>
        <nav aria-label="Main">
          {nav("databases", "Databases")}
          {nav("tunnels", "Tunnels", tunnels.length)}
          {nav("session", "Session")}
        </nav>
        {session && (
          <button class="whoami" onClick={() => setRoute({ screen: "session" })} title="Session details">
            <span class="who">{session.username}</span>
            <span class="where">{session.gateway}</span>
            <span class={left < EXPIRY_WARNING_SECS ? "expiry soon" : "expiry"}>
              {session.expired ? "expired" : `ends ${relative(session.expires_unix, now)}`}
            </span>
          </button>
        )}
      </aside>
      <main>
        {session && (session.expired || left < EXPIRY_WARNING_SECS) && (
          <ExpiryBanner session={session} now={now} onRelogin={() => setRelogin(true)} />
        )}
        {route.screen === "databases" && (
          <Databases
            toast={toast}
            onConnected={async () => {
              await refreshTunnels();
              setRoute({ screen: "tunnels" });
            }}
          />
        )}
        {route.screen === "tunnels" && (
          <Tunnels
            tunnels={tunnels}
            refresh={refreshTunnels}
            toast={toast}
            onQueries={(id) => setRoute({ screen: "queries", tunnel: id })}
            onBrowse={() => setRoute({ screen: "databases" })}
          />
        )}
        {route.screen === "queries" && (
          <Queries
            tunnel={tunnels.find((t) => t.id === route.tunnel) ?? null}
            toast={toast}
            refreshTunnels={refreshTunnels}
            onBack={() => setRoute({ screen: "tunnels" })}
          />
        )}
        {route.screen === "session" && session && (
          <Session
            state={state}
            session={session}
            now={now}
            toast={toast}
            onRelogin={() => setRelogin(true)}
            onChanged={refreshState}
          />
        )}
      </main>
      {relogin && (
        <div class="overlay" role="presentation">
          <div class="modal" role="dialog" aria-modal="true" aria-labelledby="relogin-title">
            <SignIn
              state={state}
              expired={session?.expired ?? false}
              compact
              titleId="relogin-title"
              onCancel={() => setRelogin(false)}
              onSignedIn={async () => {
                setRelogin(false);
                await refreshState();
                toast("Signed in again. Your tunnels kept their ports.");
              }}
            />
          </div>
        </div>
      )}
      <Toasts toasts={toasts} />
    </div>
  );
}

function ExpiryBanner(props: { session: SessionView; now: number; onRelogin: () => void }) {
  const { session, now } = props;
  return (
    <div class={session.expired ? "banner danger" : "banner warn"} role="status">
      <span>
        {session.expired
          ? "Your session has ended: tunnels refuse new connections until you sign in again."
          : `Your session ends at ${clock(session.expires_unix)} (${relative(session.expires_unix, now)}).`}
      </span>
      <button class="primary small" onClick={props.onRelogin}>
        Sign in again
      </button>
    </div>
  );
}
