import { useEffect, useState } from "preact/hooks";
import type { QueryView, TunnelView } from "../bindings";
import { call, isCommandError } from "../api";
import { duration, target } from "../format";

interface Props {
  tunnel: TunnelView | null;
  toast: (text: string, tone?: "info" | "warn" | "error") => void;
  refreshTunnels: () => Promise<void>;
  onBack: () => void;
}

export function Queries(props: Props) {
  const t = props.tunnel;
  const [rows, setRows] = useState<QueryView[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [pending, setPending] = useState<number | null>(null);
  const [warn, setWarn] = useState(t?.warn_after_secs ? String(t.warn_after_secs) : "");
  const [cancel, setCancel] = useState(t?.cancel_after_secs ? String(t.cancel_after_secs) : "");

  async function load() {
    if (!t) return;
    try {
      setRows(await call("queries", { id: t.id }));
      setError(null);
    } catch (e) {
      setError(isCommandError(e) ? e.message : String(e));
    }
  }

  useEffect(() => {
    load();
    const timer = setInterval(load, 2000);
    return () => clearInterval(timer);
  }, [t?.id]);

  if (!t) {
    return (
      <section class="screen">
        <p class="empty">That tunnel is no longer running.</p>
        <button onClick={props.onBack}>Back to tunnels</button>
      </section>
    );
  }

  async function stop(pid: number, terminate: boolean) {
    setPending(pid);
    try {
      const r = await call("cancel_query", { id: t!.id, pid, terminate });
      props.toast(r.message, r.outcome === "still_running" ? "warn" : "info");
      await load();
    } catch (e) {
      props.toast(isCommandError(e) ? e.message : String(e), "error");
    } finally {
      setPending(null);
    }
  }

  async function saveGuard(ev: Event) {
    ev.preventDefault();
    const n = (s: string) => (s.trim() ? Number(s) : null);
    try {
      await call("set_guard", { id: t!.id, warn_after_secs: n(warn), cancel_after_secs: n(cancel) });
      props.toast(warn || cancel ? "Runaway guard saved." : "Runaway guard off.");
      await props.refreshTunnels();
    } catch (e) {
      props.toast(isCommandError(e) ? e.message : String(e), "error");
    }
  }

  return (
    <section class="screen" aria-labelledby="queries-title">
      <header class="screen-head">
        <button class="link back" onClick={props.onBack}>
          ← Tunnels
        </button>
        <h1 id="queries-title">
          Running queries <span class="muted">· {t.database} {target(t.db_user, t.db_name)} · {t.address}</span>
        </h1>
      </header>
      <p class="muted">
        Your statements on this database, seen and stopped through the tunnel as the same database user. Refreshed every
        2 seconds.
      </p>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      {rows !== null && rows.length === 0 && <p class="empty">Nothing is running.</p>}
      {rows !== null && rows.length > 0 && (
        <table class="queries">
          <thead>
            <tr>
              <th scope="col">PID</th>
              <th scope="col">Running for</th>
              <th scope="col">State</th>
              <th scope="col">Query</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((q) => (
              <tr key={q.pid} data-pid={q.pid}>
                <td class="num">{q.pid}</td>
                <td class="num">{duration(q.duration_ms / 1000)}</td>
                <td>
                  {q.state}
                  {q.wait_event && <span class="muted"> ({q.wait_event})</span>}
                </td>
                <td>
                  <code class="sql">{q.query}</code>
                </td>
                <td class="row-actions">
                  <button class="small" name="cancel" disabled={pending === q.pid} onClick={() => stop(q.pid, false)}>
                    Cancel
                  </button>
                  <button class="small danger" name="terminate" disabled={pending === q.pid} onClick={() => stop(q.pid, true)}>
                    Terminate
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}

      <form class="guard" onSubmit={saveGuard}>
        <h2>Runaway guard</h2>
        <p class="muted">
          Watches this tunnel's statements: a notification after the first time, a cancel after the second. Leave both
          empty to turn it off.
        </p>
        <div class="guard-fields">
          <label class="field inline">
            <span>Warn after (s)</span>
            <input name="warn_after" inputMode="numeric" value={warn} onInput={(e) => setWarn(e.currentTarget.value.replace(/\D/g, ""))} />
          </label>
          <label class="field inline">
            <span>Cancel after (s)</span>
            <input name="cancel_after" inputMode="numeric" value={cancel} onInput={(e) => setCancel(e.currentTarget.value.replace(/\D/g, ""))} />
          </label>
          <button type="submit" name="save_guard">
            Save
          </button>
        </div>
      </form>
    </section>
  );
}
