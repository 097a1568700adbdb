import { useEffect, useRef, useState } from "preact/hooks";
import type { AllowedView, DatabaseView, PortSuggestion, TunnelView } from "../bindings";
import { call, isCommandError } from "../api";

interface Props {
  database: DatabaseView;
  onClose: () => void;
  onConnected: (t: TunnelView) => void;
}

/** A choice from an allowed set: a list when it is finite, free text with suggestions when any value is allowed. */
function Choice(props: {
  label: string;
  name: string;
  allowed: AllowedView;
  value: string;
  fixed?: string;
  onChange: (v: string) => void;
}) {
  const { allowed } = props;
  if (props.fixed !== undefined) {
    return (
      <label class="field">
        <span>{props.label}</span>
        <input name={props.name} value={props.fixed} disabled />
      </label>
    );
  }
  if (!allowed.wildcard && allowed.allowed.length > 0) {
    return (
      <label class="field">
        <span>{props.label}</span>
        <select name={props.name} value={props.value} onChange={(e) => props.onChange(e.currentTarget.value)}>
          {allowed.allowed.map((v) => (
            <option key={v} value={v}>
              {v}
            </option>
          ))}
        </select>
      </label>
    );
  }
  const listId = `${props.name}-options`;
  return (
    <label class="field">
      <span>{props.label}</span>
      <input
        name={props.name}
        value={props.value}
        list={listId}
        spellcheck={false}
        placeholder={allowed.denied.length ? `any except ${allowed.denied.join(", ")}` : "any"}
        onInput={(e) => props.onChange(e.currentTarget.value)}
      />
      <datalist id={listId}>
        {allowed.allowed.map((v) => (
          <option key={v} value={v} />
        ))}
      </datalist>
    </label>
  );
}

export function ConnectDialog(props: Props) {
  const d = props.database;
  const last = d.last_choice;
  const [dbUser, setDbUser] = useState(last?.db_user ?? d.default_db_user ?? "");
  const [dbName, setDbName] = useState(last?.db_name ?? d.default_db_name ?? "");
  const [roles, setRoles] = useState<string[]>(last?.db_roles.length ? last.db_roles : d.db_roles);
  const [fixed, setFixed] = useState(last?.port != null);
  const [port, setPort] = useState(last?.port ? String(last.port) : "");
  const [onSocket, setOnSocket] = useState(last?.socket_dir != null);
  const [socketDir, setSocketDir] = useState(last?.socket_dir ?? "");
  const [suggestion, setSuggestion] = useState<PortSuggestion | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<{ text: string; offerPort?: number } | null>(null);
  const dialogRef = useRef<HTMLDivElement>(null);

  const user = d.auto_provisioned ? d.default_db_user : dbUser.trim() || null;
  const name = dbName.trim() || null;

  useEffect(() => {
    const first = dialogRef.current?.querySelector<HTMLElement>("select, input:not([disabled]), button.primary");
    first?.focus();
  }, []);

  // The port remembered for this exact target (user, database name).
  useEffect(() => {
    let stale = false;
    call("suggest_port", { database: d.name, db_user: user, db_name: name })
      .then((s) => {
        if (stale) return;
        setSuggestion(s);
        if (!fixed && s.remembered && !s.remembered_free) setPort(String(s.free));
        setSocketDir((dir) => dir || s.socket_dir);
      })
      .catch(() => {});
    return () => {
      stale = true;
    };
  }, [user, name]);

  async function connect(ev?: Event, portOverride?: number) {
    ev?.preventDefault();
    setError(null);
    const chosen = portOverride ?? (fixed ? Number(port) : null);
    if (fixed && portOverride === undefined && !(chosen && chosen > 0 && chosen < 65536)) {
      setError({ text: "Enter a port between 1 and 65535." });
      return;
    }
    const dir = onSocket ? socketDir.trim() : "";
    if (onSocket && !dir.startsWith("/")) {
      setError({ text: "Enter the full path of a directory for the socket, e.g. /run/user/1000/postern." });
      return;
    }
    setBusy(true);
    try {
      const t = await call("start_tunnel", {
        database: d.name,
        db_user: user,
        db_name: name,
        db_roles: d.db_roles.length && roles.length !== d.db_roles.length ? roles : [],
        port: chosen,
        socket_dir: dir || null,
      });
      props.onConnected(t);
    } catch (e) {
      if (isCommandError(e) && e.kind === "port_unavailable") {
        setError({ text: e.message, offerPort: suggestion?.free });
      } else {
        setError({ text: isCommandError(e) ? e.message : String(e) });
      }
    } finally {
      setBusy(false);
    }
  }

  function onKey(e: KeyboardEvent) {
    if (e.key === "Escape") props.onClose();
  }

  const remembered = suggestion?.remembered;
  return (
    <div class="overlay" role="presentation" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div class="modal" role="dialog" aria-modal="true" aria-labelledby="connect-title" ref={dialogRef} onKeyDown={onKey}>
        <form onSubmit={connect}>
          <h1 id="connect-title">Connect to {d.name}</h1>
          {d.description && <p class="muted">{d.description}</p>}
          <Choice
            label="Database user"
            name="db_user"
            allowed={d.db_users}
            value={dbUser}
            fixed={d.auto_provisioned ? `${d.default_db_user ?? ""} (created for you)` : undefined}
            onChange={setDbUser}
          />
          <Choice label="Database name" name="db_name" allowed={d.db_names} value={dbName} onChange={setDbName} />
          {d.db_roles.length > 0 && (
            <fieldset class="roles">
              <legend>Database roles</legend>
              {d.db_roles.map((r) => (
                <label key={r} class="check">
                  <input
                    type="checkbox"
                    name="db_role"
                    value={r}
                    checked={roles.includes(r)}
                    onChange={(e) =>
                      setRoles(e.currentTarget.checked ? [...roles, r] : roles.filter((x) => x !== r))
                    }
                  />
                  <span>{r}</span>
                </label>
              ))}
            </fieldset>
          )}
          <fieldset class="listen">
            <legend>Listen on</legend>
            <label class="check">
              <input type="radio" name="listen" value="tcp" checked={!onSocket} onChange={() => setOnSocket(false)} />
              <span>Loopback port on 127.0.0.1 (other OS users are refused)</span>
            </label>
            <label class="check">
              <input type="radio" name="listen" value="socket" checked={onSocket} onChange={() => setOnSocket(true)} />
              <span>Unix socket, reachable only by you</span>
            </label>
            {onSocket && (
              <label class="field">
                <span>Socket directory</span>
                <input
                  name="socket_dir"
                  value={socketDir}
                  spellcheck={false}
                  placeholder={suggestion?.socket_dir ?? "/run/user/1000/postern"}
                  onInput={(e) => setSocketDir(e.currentTarget.value)}
                />
              </label>
            )}
          </fieldset>
          <fieldset class="port">
            <legend>{onSocket ? "Port (in the socket's name)" : "Local port"}</legend>
            <label class="check">
              <input type="radio" name="port_mode" checked={!fixed} onChange={() => setFixed(false)} />
              <span>
                {remembered
                  ? suggestion?.remembered_free
                    ? `Same as last time (${remembered})`
                    : `Port ${remembered} (last time) is in use; another will be chosen`
                  : "Choose one for me (remembered for next time)"}
              </span>
            </label>
            <label class="check">
              <input type="radio" name="port_mode" checked={fixed} onChange={() => setFixed(true)} />
              <span>Always use port</span>
              <input
                class="port-input"
                name="port"
                inputMode="numeric"
                aria-label="Port number"
                value={port}
                placeholder={String(remembered ?? suggestion?.free ?? 15432)}
                onFocus={() => setFixed(true)}
                onInput={(e) => {
                  setFixed(true);
                  setPort(e.currentTarget.value.replace(/\D/g, ""));
                }}
              />
            </label>
          </fieldset>
          {error && (
            <div class="error" role="alert">
              <span>{error.text}</span>
              {error.offerPort && (
                <button type="button" class="small" onClick={() => connect(undefined, error.offerPort)}>
                  Use port {error.offerPort}
                </button>
              )}
            </div>
          )}
          <div class="actions">
            <button type="button" onClick={props.onClose}>
              Cancel
            </button>
            <button type="submit" name="start" class="primary" disabled={busy}>
              {busy ? "Connecting…" : "Connect"}
            </button>
          </div>
        </form>
      </div>
    </div>
  );
}
