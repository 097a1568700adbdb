import { fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { describe, expect, it } from "vitest";
import { App } from "./app";
import { database, fakeBackend, session, tunnel } from "./test/fake";

describe("App", () => {
  it("starts on the sign-in screen when nobody is signed in", async () => {
    fakeBackend({
      app_state: () => ({ profiles: [], session: null, last_gateway: null, last_username: null }),
      tunnels: () => [],
    });
    render(<App />);
    expect(await screen.findByRole("heading", { name: "Sign in" })).toBeTruthy();
  });

  it("shows databases when signed in, and tunnels follow events", async () => {
    let tunnels = [] as ReturnType<typeof tunnel>[];
    const fake = fakeBackend({
      app_state: () => ({ profiles: [], session, last_gateway: session.gateway, last_username: "alice" }),
      tunnels: () => tunnels,
      databases: () => [database()],
    });
    render(<App />);
    expect(await screen.findByText("demo-pg")).toBeTruthy();
    expect(screen.getByText("alice")).toBeTruthy();
    tunnels = [tunnel()];
    fake.emit({ type: "tunnels_changed" });
    expect(await screen.findByLabelText("1 running")).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: /Tunnels/ }));
    expect(await screen.findByText("127.0.0.1:40111")).toBeTruthy();
  });

  it("warns before the session ends and offers to sign in again", async () => {
    fakeBackend({
      app_state: () => ({
        profiles: [],
        session: { ...session, expires_unix: Date.now() / 1000 + 300 },
        last_gateway: session.gateway,
        last_username: "alice",
      }),
      tunnels: () => [],
      databases: () => [],
      gateway_info: ({ gateway }) => ({ gateway, fingerprint: "sha256:00", trusted: true, connectors: [] }),
    });
    render(<App />);
    expect((await screen.findByRole("status")).textContent).toMatch(/Your session ends at .* \(in [45] min/);
    fireEvent.click(screen.getByRole("button", { name: "Sign in again" }));
    const dialog = await screen.findByRole("dialog");
    expect(dialog.textContent).toContain("Your tunnels stay open on their ports");
    await waitFor(() => expect(document.activeElement?.getAttribute("name")).toBe("password"));
  });

  it("shows guard notifications", async () => {
    const fake = fakeBackend({
      app_state: () => ({ profiles: [], session, last_gateway: null, last_username: null }),
      tunnels: () => [],
      databases: () => [],
    });
    render(<App />);
    await screen.findByRole("heading", { name: "Databases" });
    fake.emit({
      type: "guard",
      tunnel: 1,
      action: "cancelled",
      pid: 7,
      query: "select pg_sleep(60)",
      message: "Cancelled a statement on demo-pg after 31 s (process 7).",
    });
    expect(await screen.findByText(/Cancelled a statement on demo-pg/)).toBeTruthy();
  });
});
