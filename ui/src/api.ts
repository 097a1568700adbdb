// The one typed way from the UI to Rust: `call(name, args)` is typed by the
// `Commands` map generated from the Rust command table (bindings.ts), and
// every failure is a `CommandError` ({kind, message}).

import type { AppEvent, CommandError, Commands, ErrorKind } from "./bindings";
import { EVENT_NAME } from "./bindings";

export type { CommandError, ErrorKind };
export type CommandName = keyof Commands;
export type Args<K extends CommandName> = Commands[K]["args"];
export type Result<K extends CommandName> = Commands[K]["result"];

/** How commands reach Rust: Tauri's IPC in the app, a fake in tests. */
export interface Transport {
  invoke(cmd: string, payload?: Record<string, unknown>): Promise<unknown>;
  listen(event: string, handler: (payload: unknown) => void): Promise<() => void>;
}

const tauriTransport: Transport = {
  async invoke(cmd, payload) {
    const { invoke } = await import("@tauri-apps/api/core");
    return invoke(cmd, payload);
  },
  async listen(event, handler) {
    const { listen } = await import("@tauri-apps/api/event");
    return listen(event, (e) => handler(e.payload));
  },
};

let transport: Transport = tauriTransport;

/** Replaces the transport (tests). */
export function setTransport(t: Transport) {
  transport = t;
}

export function isCommandError(e: unknown): e is CommandError {
  return typeof e === "object" && e !== null && "kind" in e && "message" in e;
}

function toCommandError(e: unknown): CommandError {
  if (isCommandError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return { kind: "local", message, fingerprint: null };
}

/** Calls a command; rejects with a `CommandError`. */
export async function call<K extends CommandName>(
  cmd: K,
  ...args: Args<K> extends null ? [] : [Args<K>]
): Promise<Result<K>> {
  try {
    const payload = args.length ? { args: args[0] as unknown } : undefined;
    return (await transport.invoke(cmd, payload)) as Result<K>;
  } catch (e) {
    throw toCommandError(e);
  }
}

/** Subscribes to the app's events; returns the unsubscribe function. */
export function onEvent(handler: (event: AppEvent) => void): Promise<() => void> {
  return transport.listen(EVENT_NAME, (payload) => handler(payload as AppEvent));
}
