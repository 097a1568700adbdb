// A fake backend behind the same typed transport the app uses.
import { setTransport, type Args, type CommandName, type Result } from "../api";
import type { AppEvent, CommandError, DatabaseView, SessionView, TunnelView } from "../bindings";
import { EVENT_NAME } from "../bindings";

type Handler<K extends CommandName> = (args: Args<K>) => Result<K> | Promise<Result<K>>;
export type Handlers = { [K in CommandName]?: Handler<K> };

export interface Fake {
  calls: { cmd: CommandName; args: unknown }[];
  emit: (e: AppEvent) => void;
  argsOf: <K extends CommandName>(cmd: K) => Args<K>[];
}

export function fakeBackend(handlers: Handlers): Fake {
  const calls: Fake["calls"] = [];
  const listeners: ((p: unknown) => void)[] = [];
  setTransport({
    async invoke(cmd, payload) {
      const args = payload ? payload.args : null;
      calls.push({ cmd: cmd as CommandName, args });
      const h = handlers[cmd as CommandName] as ((a: unknown) => unknown) | undefined;
      if (!h) throw { kind: "invalid", message: `no fake for ${cmd}`, fingerprint: null } satisfies CommandError;
      return h(args);
    },
    async listen(event, handler) {
      if (event === EVENT_NAME) listeners.push(handler);
      return () => {};
    },
  });
  return {
    calls,
    emit: (e) => listeners.forEach((l) => l(e)),
    argsOf: (cmd) => calls.filter((c) => c.cmd === cmd).map((c) => c.args) as never,
  };
}

export function fail(kind: CommandError["kind"], message: string, fingerprint: string | null = null): never {
  throw { kind, message, fingerprint } satisfies CommandError;
}

export const session: SessionView = {
  profile: "127.0.0.1_3080",
  gateway: "127.0.0.1:3080",
  username: "alice",
  roles: ["dev"],
  traits: [{ name: "internal.db_users", values: ["reader"] }],
  expires_unix: Date.now() / 1000 + 8 * 3600,
  expired: false,
  login: { method: "local", username: "alice" },
};

export function database(over: Partial<DatabaseView> = {}): DatabaseView {
  return {
    name: "demo-pg",
    description: "Demo PostgreSQL",
    protocol: "postgres",
    kind: "self-hosted",
    labels: [
      { key: "env", value: "demo" },
      { key: "team", value: "data" },
    ],
    db_users: { allowed: ["demo_reader", "demo_writer"], wildcard: false, denied: [], summary: "[demo_reader, demo_writer]" },
    db_names: { allowed: ["analytics", "shop"], wildcard: false, denied: [], summary: "[analytics, shop]" },
    db_roles: [],
    auto_user_mode: "off",
    auto_provisioned: false,
    limits: null,
    default_db_user: "demo_reader",
    default_db_name: "analytics",
    last_choice: null,
    ...over,
  };
}

export function tunnel(over: Partial<TunnelView> = {}): TunnelView {
  return {
    id: 1,
    profile: "127.0.0.1_3080",
    database: "demo-pg",
    kind: "self-hosted",
    db_user: "demo_reader",
    db_name: "shop",
    db_roles: [],
    address: "127.0.0.1:40111",
    port: 40111,
    uri: "postgresql://demo_reader@127.0.0.1:40111/shop?sslmode=disable",
    psql: 'psql "host=127.0.0.1 port=40111 user=demo_reader dbname=shop sslmode=disable"',
    started_unix: Date.now() / 1000 - 125,
    connections: 2,
    total_connections: 5,
    bytes_in: 2048,
    bytes_out: 3 * 1024 * 1024,
    warn_after_secs: null,
    cancel_after_secs: null,
    favourite: false,
    socket_dir: null,
    port_changed_from: null,
    port_notice: null,
    refused_connections: 0,
    ...over,
  };
}
