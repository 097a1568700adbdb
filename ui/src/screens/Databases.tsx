import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { DatabaseView } from "../bindings";
import { call, isCommandError } from "../api";
import { ConnectDialog } from "./ConnectDialog";

interface Props {
  toast: (text: string, tone?: "info" | "warn" | "error") => void;
  onConnected: () => void;
}

function allowedText(v: DatabaseView["db_users"]) {
  const names = [...(v.wildcard ? ["any"] : []), ...v.allowed];
  const base = names.length ? names.join(", ") : "none";
  return v.wildcard && v.denied.length ? `${base} except ${v.denied.join(", ")}` : base;
}

export function Databases(props: Props) {
  const [list, setList] = useState<DatabaseView[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [query, setQuery] = useState("");
  const [label, setLabel] = useState("");
  const [protocol, setProtocol] = useState("");
  const [connecting, setConnecting] = useState<DatabaseView | null>(null);
  const searchRef = useRef<HTMLInputElement>(null);

  async function load() {
    setError(null);
    try {
      setList(await call("databases"));
    } catch (e) {
      setError(isCommandError(e) ? e.message : String(e));
    }
  }

  useEffect(() => {
    load();
    searchRef.current?.focus();
  }, []);

  const labels = useMemo(() => {
    const set = new Set<string>();
    for (const d of list ?? []) for (const l of d.labels) set.add(`${l.key}=${l.value}`);
    return [...set].sort();
  }, [list]);
  const protocols = useMemo(() => [...new Set((list ?? []).map((d) => d.protocol))].sort(), [list]);

  const shown = (list ?? []).filter((d) => {
    const q = query.trim().toLowerCase();
    const text = `${d.name} ${d.description} ${d.kind} ${d.labels.map((l) => `${l.key}=${l.value}`).join(" ")}`.toLowerCase();
    return (
      (!q || q.split(/\s+/).every((w) => text.includes(w))) &&
      (!label || d.labels.some((l) => `${l.key}=${l.value}` === label)) &&
      (!protocol || d.protocol === protocol)
    );
  });

  return (
    <section class="screen" aria-labelledby="databases-title">
      <header class="screen-head">
        <h1 id="databases-title">Databases</h1>
        <button onClick={load} title="Reload the list from the gateway">
          Refresh
        </button>
      </header>
      <div class="filters" role="search">
        <input
          ref={searchRef}
          type="search"
          name="search"
          placeholder="Search by name, description or label"
          aria-label="Search databases"
          value={query}
          onInput={(e) => setQuery(e.currentTarget.value)}
        />
        <select aria-label="Filter by label" name="label" value={label} onChange={(e) => setLabel(e.currentTarget.value)}>
          <option value="">All labels</option>
          {labels.map((l) => (
            <option key={l} value={l}>
              {l}
            </option>
          ))}
        </select>
        <select
          aria-label="Filter by protocol"
          name="protocol"
          value={protocol}
          onChange={(e) => setProtocol(e.currentTarget.value)}
        >
          <option value="">All protocols</option>
          {protocols.map((p) => (
            <option key={p} value={p}>
              {p}
            </option>
          ))}
        </select>
      </div>

      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {list === null && !error && <p class="muted">Loading…</p>}
      {list !== null && shown.length === 0 && (
        <p class="empty">{list.length === 0 ? "No databases are available to you." : "No database matches."}</p>
      )}

      <ul class="db-list">
        {shown.map((d) => (
          <li key={d.name} class="db" data-database={d.name}>
            <div class="db-main">
              <div class="db-title">
                <h2>{d.name}</h2>
                <span class="tag">{d.protocol}</span>
                <span class="tag subtle">{d.kind}</span>
                {d.auto_provisioned && (
                  <span class="tag accent" title={`The gateway creates your database user (${d.auto_user_mode})`}>
                    auto-provisioned
                  </span>
                )}
              </div>
              {d.description && <p class="muted">{d.description}</p>}
              <dl class="allowed">
                <dt>DB users</dt>
                <dd>{d.auto_provisioned ? `${d.default_db_user} (your username)` : allowedText(d.db_users)}</dd>
                <dt>DB names</dt>
                <dd>{allowedText(d.db_names)}</dd>
                {d.db_roles.length > 0 && (
                  <>
                    <dt>DB roles</dt>
                    <dd>{d.db_roles.join(", ")}</dd>
                  </>
                )}
                {d.limits && (
                  <>
                    <dt>Limits</dt>
                    <dd>{d.limits}</dd>
                  </>
                )}
              </dl>
              {d.labels.length > 0 && (
                <div class="labels" aria-label="Labels">
                  {d.labels.map((l) => (
                    <button
                      key={l.key}
                      class="label"
                      title="Filter by this label"
                      onClick={() => setLabel(`${l.key}=${l.value}`)}
                    >
                      {l.key}: {l.value}
                    </button>
                  ))}
                </div>
              )}
            </div>
            <button class="primary" name="connect" onClick={() => setConnecting(d)} aria-label={`Connect to ${d.name}`}>
              Connect
            </button>
          </li>
        ))}
      </ul>

      {connecting && (
        <ConnectDialog
          database={connecting}
          onClose={() => setConnecting(null)}
          onConnected={(t) => {
            setConnecting(null);
            props.toast(
              t.port_notice ?? `Tunnel to ${t.database} listening on ${t.address}.`,
            );
            props.onConnected();
          }}
        />
      )}
    </section>
  );
}
