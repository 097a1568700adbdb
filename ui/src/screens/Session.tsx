import { useEffect, useState } from "preact/hooks";
import type { AppState, SessionView } from "../bindings";
import { call, isCommandError } from "../api";
import { clock, relative } from "../format";

interface Props {
  state: AppState;
  session: SessionView;
  now: number;
  toast: (text: string, tone?: "info" | "warn" | "error") => void;
  onRelogin: () => void;
  onChanged: () => Promise<void>;
}

export function Session(props: Props) {
  const s = props.session;
  const others = props.state.profiles.filter((p) => p.name !== s.profile);

  // null until the app has said whether the entry exists.
  const [autostart, setAutostart] = useState<boolean | null>(null);
  useEffect(() => {
    call("autostart").then(setAutostart, (e) =>
      props.toast(isCommandError(e) ? e.message : String(e), "error"),
    );
  }, []);

  async function changeAutostart(box: HTMLInputElement) {
    try {
      setAutostart(await call("set_autostart", { enabled: box.checked }));
    } catch (e) {
      // The state did not change, so nothing re-renders: put the box back.
      box.checked = autostart === true;
      props.toast(isCommandError(e) ? e.message : String(e), "error");
    }
  }

  async function run(p: Promise<unknown>) {
    try {
      await p;
      await props.onChanged();
    } catch (e) {
      props.toast(isCommandError(e) ? e.message : String(e), "error");
    }
  }

  return (
    <section class="screen" aria-labelledby="session-title">
      <header class="screen-head">
        <h1 id="session-title">Session</h1>
      </header>
      <dl class="facts">
        <dt>User</dt>
        <dd data-fact="user">{s.username}</dd>
        <dt>Gateway</dt>
        <dd>
          {s.gateway} <span class="muted">(profile {s.profile})</span>
        </dd>
        <dt>Roles</dt>
        <dd>{s.roles.length ? s.roles.map((r) => <span key={r} class="tag">{r}</span>) : "none"}</dd>
        <dt>Signed in with</dt>
        <dd>{s.login ? (s.login.method === "sso" ? "single sign-on" : "local account") : "the command line"}</dd>
        <dt>Ends</dt>
        <dd>
          {clock(s.expires_unix)} <span class="muted">({relative(s.expires_unix, props.now)})</span>
        </dd>
        {s.traits.length > 0 && (
          <>
            <dt>Traits</dt>
            <dd>
              <ul class="traits">
                {s.traits.map((t) => (
                  <li key={t.name}>
                    <code>{t.name}</code>: {t.values.join(", ")}
                  </li>
                ))}
              </ul>
            </dd>
          </>
        )}
      </dl>
      <div class="actions left">
        <button class="primary" onClick={props.onRelogin}>
          Sign in again
        </button>
        <button class="danger" name="signout" onClick={() => run(call("sign_out"))}>
          Sign out
        </button>
      </div>
      <p class="muted">Signing in again keeps every tunnel on its port. Signing out stops this gateway's tunnels.</p>

      <h2>This computer</h2>
      <label class="check">
        <input
          type="checkbox"
          name="autostart"
          checked={autostart === true}
          disabled={autostart === null}
          onChange={(e) => changeAutostart(e.currentTarget)}
        />
        Start Postern at login (in the tray)
      </label>

      {others.length > 0 && (
        <>
          <h2>Other gateways</h2>
          <ul class="profile-list">
            {others.map((p) => (
              <li key={p.name}>
                <span>
                  {p.gateway} <span class="muted">{p.username ? `as ${p.username}` : "signed out"}</span>
                </span>
                <button class="small" onClick={() => run(call("use_profile", { name: p.name }))}>
                  Switch
                </button>
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
