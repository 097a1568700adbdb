import { useEffect, useRef, useState } from "preact/hooks";
import type { AppState, GatewayInfo } from "../bindings";
import { call, isCommandError, onEvent } from "../api";

interface Props {
  state: AppState;
  expired: boolean;
  onSignedIn: () => void | Promise<void>;
  /** In the "sign in again" dialog. */
  compact?: boolean;
  titleId?: string;
  onCancel?: () => void;
}

function looksLikeAddress(s: string) {
  return /^[^\s:]+:\d{1,5}$/.test(s.trim());
}

export function SignIn(props: Props) {
  const { state } = props;
  const login = state.session?.login ?? null;
  const [gateway, setGateway] = useState(state.session?.gateway ?? state.last_gateway ?? "");
  const [username, setUsername] = useState(state.last_username ?? "");
  const [password, setPassword] = useState("");
  const [totp, setTotp] = useState("");
  const [needTotp, setNeedTotp] = useState(false);
  const [info, setInfo] = useState<GatewayInfo | null>(null);
  const [trust, setTrust] = useState(false);
  const [busy, setBusy] = useState<"" | "local" | "sso">("");
  const [ssoUrl, setSsoUrl] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const passwordRef = useRef<HTMLInputElement>(null);
  const totpRef = useRef<HTMLInputElement>(null);

  // Look the gateway up as it is typed: its CA (trusted yet?) and SSO connectors.
  useEffect(() => {
    setInfo(null);
    setTrust(false);
    if (!looksLikeAddress(gateway)) return;
    let stale = false;
    const t = setTimeout(async () => {
      try {
        const i = await call("gateway_info", { gateway: gateway.trim() });
        if (!stale) setInfo(i);
      } catch (e) {
        if (!stale && isCommandError(e) && e.kind !== "unreachable") setError(e.message);
      }
    }, 350);
    return () => {
      stale = true;
      clearTimeout(t);
    };
  }, [gateway]);

  useEffect(() => {
    const off = onEvent((e) => {
      if (e.type === "sso_started") setSsoUrl(e.url);
    });
    return () => {
      off.then((f) => f());
    };
  }, []);

  useEffect(() => {
    if (needTotp) totpRef.current?.focus();
  }, [needTotp]);

  useEffect(() => {
    if (props.compact && login?.method !== "sso") passwordRef.current?.focus();
  }, []);

  const pin = info && !info.trusted && trust ? info.fingerprint : null;
  const untrusted = info !== null && !info.trusted;
  const blocked = untrusted && !trust;

  function fail(e: unknown) {
    if (isCommandError(e)) {
      if (e.kind === "totp_required") {
        setNeedTotp(true);
      }
      if (e.kind === "untrusted_ca" && e.fingerprint) {
        setInfo({ gateway: gateway.trim(), fingerprint: e.fingerprint, trusted: false, connectors: info?.connectors ?? [] });
      }
      setError(e.message);
    } else {
      setError(String(e));
    }
  }

  async function signInLocal(ev: Event) {
    ev.preventDefault();
    setError(null);
    setBusy("local");
    try {
      await call("login_local", {
        gateway: gateway.trim(),
        username: username.trim(),
        password,
        totp: needTotp && totp.trim() ? totp.trim() : null,
        ca_pin: pin,
      });
      setPassword("");
      await props.onSignedIn();
    } catch (e) {
      // Gateways answer a wrong password and a missing one-time code alike
      // (telling them apart would tell a guesser the password was right), so
      // a refusal offers the code field for accounts that have one.
      if (isCommandError(e) && e.kind === "refused") setNeedTotp(true);
      fail(e);
    } finally {
      setBusy("");
    }
  }

  async function signInSso(connector: string | null) {
    setError(null);
    setSsoUrl(null);
    setBusy("sso");
    try {
      await call("login_sso", { gateway: gateway.trim(), connector, ca_pin: pin });
      await props.onSignedIn();
    } catch (e) {
      if (!(isCommandError(e) && e.kind === "cancelled" && e.message.includes("cancelled"))) fail(e);
    } finally {
      setBusy("");
      setSsoUrl(null);
    }
  }

  const others = state.profiles.filter((p) => p.username && !(p.expires_unix !== null && p.expires_unix * 1000 < Date.now()));
  const connectors = info?.connectors ?? [];

  return (
    <div class={props.compact ? "signin compact" : "signin"}>
      <div class="card">
        {!props.compact && (
          <div class="brand big">
            <span class="mark" aria-hidden="true" />
            Postern
          </div>
        )}
        <h1 id={props.titleId}>{props.compact ? "Sign in again" : "Sign in"}</h1>
        <p class="muted">
          {props.compact
            ? "Your tunnels stay open on their ports while you sign in."
            : props.expired
              ? "Your session has ended. Sign in again to use your databases."
              : "Sign in to your Postern gateway to see the databases you may use."}
        </p>

        {!props.compact && others.length > 0 && (
          <div class="profiles" role="group" aria-label="Signed-in profiles">
            {others.map((p) => (
              <button
                key={p.name}
                class="chip"
                type="button"
                onClick={async () => {
                  try {
                    await call("use_profile", { name: p.name });
                    await props.onSignedIn();
                  } catch (e) {
                    fail(e);
                  }
                }}
              >
                Continue as {p.username} on {p.gateway}
              </button>
            ))}
          </div>
        )}

        <label class="field">
          <span>Gateway address</span>
          <input
            name="gateway"
            value={gateway}
            placeholder="gateway.example.com:3080"
            autoComplete="url"
            list="known-gateways"
            spellcheck={false}
            disabled={props.compact}
            onInput={(e) => {
              setGateway(e.currentTarget.value);
              setError(null);
            }}
          />
          <datalist id="known-gateways">
            {state.profiles.map((p) => (
              <option key={p.name} value={p.gateway} />
            ))}
          </datalist>
        </label>

        {untrusted && (
          <div class="trust" role="group" aria-label="Trust this gateway">
            <p>
              First connection to this gateway. Compare its CA fingerprint with the one your administrator gave you:
            </p>
            <code class="fingerprint">{info!.fingerprint}</code>
            <label class="check">
              <input name="trust" type="checkbox" checked={trust} onChange={(e) => setTrust(e.currentTarget.checked)} />
              <span>I checked the fingerprint; trust this gateway</span>
            </label>
          </div>
        )}

        {connectors.length > 0 && (
          <div class="sso">
            {connectors.map((c) => (
              <button
                key={c}
                type="button"
                class={login?.method === "sso" ? "primary wide" : "wide"}
                disabled={busy !== "" || blocked}
                onClick={() => signInSso(connectors.length === 1 ? null : c)}
              >
                {connectors.length === 1 ? "Sign in with SSO" : `Sign in with ${c}`}
              </button>
            ))}
            {busy === "sso" && (
              <div class="waiting" role="status">
                <span>Finish signing in in your browser…</span>
                {ssoUrl && (
                  <button type="button" class="link" onClick={() => call("copy_text", { text: ssoUrl })}>
                    Copy the sign-in link
                  </button>
                )}
                <button type="button" class="link" onClick={() => call("cancel_sso")}>
                  Cancel
                </button>
              </div>
            )}
            <div class="or">
              <span>or with a local account</span>
            </div>
          </div>
        )}

        <form onSubmit={signInLocal}>
          <label class="field">
            <span>Username</span>
            <input
              name="username"
              value={username}
              autoComplete="username"
              spellcheck={false}
              onInput={(e) => setUsername(e.currentTarget.value)}
            />
          </label>
          <label class="field">
            <span>Password</span>
            <input
              ref={passwordRef}
              name="password"
              type="password"
              value={password}
              autoComplete="current-password"
              onInput={(e) => setPassword(e.currentTarget.value)}
            />
          </label>
          {needTotp && (
            <label class="field">
              <span>One-time code</span>
              <input
                ref={totpRef}
                name="totp"
                value={totp}
                inputMode="numeric"
                autoComplete="one-time-code"
                maxLength={8}
                onInput={(e) => setTotp(e.currentTarget.value)}
              />
            </label>
          )}
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
          <div class="actions">
            {props.onCancel && (
              <button type="button" onClick={props.onCancel}>
                Cancel
              </button>
            )}
            <button
              type="submit"
              name="signin"
              class="primary"
              disabled={busy !== "" || blocked || !gateway.trim() || !username.trim() || !password}
            >
              {busy === "local" ? "Signing in…" : "Sign in"}
            </button>
          </div>
        </form>
      </div>
    </div>
  );
}
