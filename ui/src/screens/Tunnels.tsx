import { useEffect, useState } from "preact/hooks";
import type { TunnelView } from "../bindings";
import { call, isCommandError } from "../api";
import { bytes, duration, nowUnix, target } from "../format";

interface Props {
  tunnels: TunnelView[];
  refresh: () => Promise<void>;
  toast: (text: string, tone?: "info" | "warn" | "error") => void;
  onQueries: (id: number) => void;
  onBrowse: () => void;
}

export function Tunnels(props: Props) {
  const [now, setNow] = useState(nowUnix());

  // Live counters while this screen is shown.
  useEffect(() => {
    const t = setInterval(() => {
      setNow(nowUnix());
      props.refresh();
    }, 1000);
    return () => clearInterval(t);
  }, [props.refresh]);

  async function act(p: Promise<{ message: string } | null>, done?: string) {
    try {
      const r = await p;
      props.toast(r?.message ?? done ?? "Done.");
    } catch (e) {
      props.toast(isCommandError(e) ? e.message : String(e), "error");
    }
  }

  if (props.tunnels.length === 0) {
    return (
      <section class="screen" aria-labelledby="tunnels-title">
        <header class="screen-head">
          <h1 id="tunnels-title">Tunnels</h1>
        </header>
        <div class="empty">
          <p>No tunnels are open.</p>
          <button class="primary" onClick={props.onBrowse}>
            Browse databases
          </button>
        </div>
      </section>
    );
  }

  return (
    <section class="screen" aria-labelledby="tunnels-title">
      <header class="screen-head">
        <h1 id="tunnels-title">Tunnels</h1>
        <p class="muted">Tunnels keep running when the window is closed; quit from the tray icon.</p>
      </header>
      <ul class="tunnel-list">
        {props.tunnels.map((t) => {
          const who = target(t.db_user, t.db_name);
          return (
            <li key={t.id} class="tunnel" data-tunnel={t.id} data-port={t.port}>
              <div class="tunnel-head">
                <span class={t.connections > 0 ? "dot live" : "dot"} aria-hidden="true" />
                <h2>
                  {t.database}
                  {who && <span class="muted"> · {who}</span>}
                </h2>
                <button
                  class={t.favourite ? "star on" : "star"}
                  aria-pressed={t.favourite}
                  title={t.favourite ? "Favourite: reopens when Postern starts" : "Reopen when Postern starts"}
                  aria-label="Favourite"
                  onClick={() => act(call("set_favourite", { id: t.id, favourite: !t.favourite }).then(() => null), t.favourite ? "Not reopened at start any more." : "Reopens when Postern starts.")}
                >
                  {t.favourite ? "★" : "☆"}
                </button>
              </div>
              {t.port_notice && (
                <p class="warning" role="status">
                  {t.port_notice}
                </p>
              )}
              <div class="address">
                <code class="addr">{t.address}</code>
                <button class="small" onClick={() => act(call("copy_text", { text: t.uri }).then(() => null), "Connection URI copied.")}>
                  Copy URI
                </button>
                <button class="small" onClick={() => act(call("copy_text", { text: t.psql }).then(() => null), "psql command copied.")}>
                  Copy psql command
                </button>
              </div>
              <code class="command" title="psql command">
                {t.psql}
              </code>
              <dl class="stats">
                <div>
                  <dt>Connections</dt>
                  <dd data-stat="connections">{t.connections}</dd>
                </div>
                <div>
                  <dt>Total</dt>
                  <dd>{t.total_connections}</dd>
                </div>
                <div>
                  <dt>Sent</dt>
                  <dd>{bytes(t.bytes_in)}</dd>
                </div>
                <div>
                  <dt>Received</dt>
                  <dd>{bytes(t.bytes_out)}</dd>
                </div>
                <div>
                  <dt>Up</dt>
                  <dd>{duration(now - t.started_unix)}</dd>
                </div>
                {t.refused_connections > 0 && (
                  <div class="refused" title="Programs of other OS users tried this tunnel and were turned away">
                    <dt>Refused</dt>
                    <dd data-stat="refused">{t.refused_connections}</dd>
                  </div>
                )}
                {(t.warn_after_secs || t.cancel_after_secs) && (
                  <div>
                    <dt>Guard</dt>
                    <dd>
                      {[t.warn_after_secs && `warn ${t.warn_after_secs}s`, t.cancel_after_secs && `cancel ${t.cancel_after_secs}s`]
                        .filter(Boolean)
                        .join(", ")}
                    </dd>
                  </div>
                )}
              </dl>
              <div class="tunnel-actions">
                <button name="queries" onClick={() => props.onQueries(t.id)}>
                  Running queries
                </button>
                <button name="pgadmin" onClick={() => act(call("open_pgadmin", { id: t.id }))}>
                  Open in pgAdmin
                </button>
                <button name="psql" onClick={() => act(call("open_psql", { id: t.id }))}>
                  Open psql
                </button>
                <button name="service" onClick={() => act(call("write_service", { id: t.id }))}>
                  Add to pg_service.conf
                </button>
                <span class="spacer" />
                <button name="stop" class="danger" onClick={() => act(call("stop_tunnel", { id: t.id }).then(() => null), `Stopped the tunnel to ${t.database}.`).then(props.refresh)}>
                  Stop
                </button>
              </div>
            </li>
          );
        })}
      </ul>
    </section>
  );
}
