import { fireEvent, render, screen, waitFor, within } from "@testing-library/preact";
import { describe, expect, it, vi } from "vitest";
import { database, fail, fakeBackend, tunnel } from "../test/fake";
import { Databases } from "./Databases";

const list = [
  database(),
  database({
    name: "orders",
    description: "Orders service",
    labels: [{ key: "env", value: "prod" }],
    auto_provisioned: true,
    auto_user_mode: "keep",
    default_db_user: "alice",
    db_users: { allowed: [], wildcard: false, denied: [], summary: "[]" },
    db_roles: ["reader", "writer"],
    limits: "statements up to 10m; idle in transaction up to 15m",
  }),
];

describe("Databases", () => {
  it("lists what may be used and filters by text and label", async () => {
    fakeBackend({ databases: () => list });
    render(<Databases toast={() => {}} onConnected={() => {}} />);
    await screen.findByText("orders");
    expect(screen.getByText("auto-provisioned")).toBeTruthy();
    expect(screen.getByText("demo_reader, demo_writer")).toBeTruthy();
    expect(screen.getByText("alice (your username)")).toBeTruthy();
    expect(screen.getByText("reader, writer")).toBeTruthy();
    expect(screen.getByText("statements up to 10m; idle in transaction up to 15m")).toBeTruthy();
    expect(screen.getAllByText("Limits")).toHaveLength(1);

    fireEvent.input(screen.getByLabelText("Search databases"), { target: { value: "orders serv" } });
    expect(screen.queryByText("demo-pg")).toBeNull();
    fireEvent.input(screen.getByLabelText("Search databases"), { target: { value: "" } });
    fireEvent.change(screen.getByLabelText("Filter by label"), { target: { value: "env=demo" } });
    expect(screen.queryByText("orders")).toBeNull();
    expect(screen.getByText("demo-pg")).toBeTruthy();
  });

  it("connects through the dialog with the chosen user, name and port", async () => {
    const fake = fakeBackend({
      databases: () => list,
      suggest_port: () => ({ remembered: null, remembered_free: false, free: 41000, socket_dir: "/run/user/0/postern" }),
      start_tunnel: () => tunnel(),
    });
    const onConnected = vi.fn();
    const toast = vi.fn();
    render(<Databases toast={toast} onConnected={onConnected} />);
    fireEvent.click(await screen.findByRole("button", { name: "Connect to demo-pg" }));
    const dialog = screen.getByRole("dialog");
    fireEvent.change(within(dialog).getByLabelText("Database name"), { target: { value: "shop" } });
    fireEvent.input(within(dialog).getByLabelText("Port number"), { target: { value: "40111" } });
    fireEvent.click(within(dialog).getByRole("button", { name: "Connect" }));
    await waitFor(() => expect(onConnected).toHaveBeenCalled());
    expect(fake.argsOf("start_tunnel")[0]).toEqual({
      database: "demo-pg",
      db_user: "demo_reader",
      db_name: "shop",
      db_roles: [],
      port: 40111,
      socket_dir: null,
    });
    expect(toast).toHaveBeenCalledWith("Tunnel to demo-pg listening on 127.0.0.1:40111.");
  });

  it("offers a Unix socket in a private directory instead of the loopback port", async () => {
    const fake = fakeBackend({
      databases: () => list,
      suggest_port: () => ({ remembered: null, remembered_free: false, free: 41000, socket_dir: "/run/user/0/postern" }),
      start_tunnel: () =>
        tunnel({ address: "/run/user/0/postern/.s.PGSQL.5432", port: 5432, socket_dir: "/run/user/0/postern" }),
    });
    const toast = vi.fn();
    render(<Databases toast={toast} onConnected={() => {}} />);
    fireEvent.click(await screen.findByRole("button", { name: "Connect to demo-pg" }));
    const dialog = screen.getByRole("dialog");
    expect(within(dialog).queryByLabelText("Socket directory")).toBeNull();
    fireEvent.click(within(dialog).getByLabelText("Unix socket, reachable only by you"));
    const dir = (await within(dialog).findByLabelText("Socket directory")) as HTMLInputElement;
    await waitFor(() => expect(dir.value).toBe("/run/user/0/postern"));

    fireEvent.input(dir, { target: { value: "relative/dir" } });
    fireEvent.click(within(dialog).getByRole("button", { name: "Connect" }));
    expect((await within(dialog).findByRole("alert")).textContent).toContain("full path");
    expect(fake.argsOf("start_tunnel")).toHaveLength(0);

    fireEvent.input(dir, { target: { value: "/home/me/.sockets" } });
    fireEvent.click(within(dialog).getByRole("button", { name: "Connect" }));
    await waitFor(() => expect(fake.argsOf("start_tunnel")).toHaveLength(1));
    expect(fake.argsOf("start_tunnel")[0]).toMatchObject({ socket_dir: "/home/me/.sockets", port: null });
    await waitFor(() =>
      expect(toast).toHaveBeenCalledWith("Tunnel to demo-pg listening on /run/user/0/postern/.s.PGSQL.5432."),
    );
  });

  it("says plainly when the remembered port is held by another program", async () => {
    const notice =
      "Port 40111, used by this tunnel last time, is held by another program (run by OS user mallory). Saved connections that use port 40111 reach that program, not Postern.";
    fakeBackend({
      databases: () => list,
      suggest_port: () => ({ remembered: 40111, remembered_free: false, free: 41234, socket_dir: "/run/user/0/postern" }),
      start_tunnel: () => tunnel({ port: 41234, address: "127.0.0.1:41234", port_changed_from: 40111, port_notice: notice }),
    });
    const toast = vi.fn();
    render(<Databases toast={toast} onConnected={() => {}} />);
    fireEvent.click(await screen.findByRole("button", { name: "Connect to demo-pg" }));
    await screen.findByText("Port 40111 (last time) is in use; another will be chosen");
    fireEvent.click(screen.getByRole("button", { name: "Connect" }));
    await waitFor(() => expect(toast).toHaveBeenCalledWith(notice));
  });

  it("offers another port when the chosen one is taken", async () => {
    let calls = 0;
    const fake = fakeBackend({
      databases: () => list,
      suggest_port: () => ({ remembered: 40111, remembered_free: true, free: 41234, socket_dir: "/run/user/0/postern" }),
      start_tunnel: ({ port }) => (calls++ === 0 ? fail("port_unavailable", "Port 5432 is already in use on this computer.") : tunnel({ port: port! })),
    });
    const onConnected = vi.fn();
    render(<Databases toast={() => {}} onConnected={onConnected} />);
    fireEvent.click(await screen.findByRole("button", { name: "Connect to demo-pg" }));
    await screen.findByText("Same as last time (40111)");
    fireEvent.input(screen.getByLabelText("Port number"), { target: { value: "5432" } });
    fireEvent.click(screen.getByRole("button", { name: "Connect" }));
    fireEvent.click(await screen.findByRole("button", { name: "Use port 41234" }));
    await waitFor(() => expect(onConnected).toHaveBeenCalled());
    expect(fake.argsOf("start_tunnel").map((a) => a.port)).toEqual([5432, 41234]);
  });

  it("fixes the user of an auto-provisioned database and sends a roles subset", async () => {
    const fake = fakeBackend({
      databases: () => list,
      suggest_port: () => ({ remembered: null, remembered_free: false, free: 41000, socket_dir: "/run/user/0/postern" }),
      start_tunnel: () => tunnel(),
    });
    render(<Databases toast={() => {}} onConnected={() => {}} />);
    fireEvent.click(await screen.findByRole("button", { name: "Connect to orders" }));
    const user = screen.getByLabelText("Database user") as HTMLInputElement;
    expect(user.disabled).toBe(true);
    expect(user.value).toContain("alice");
    fireEvent.click(screen.getByLabelText("writer"));
    fireEvent.click(screen.getByRole("button", { name: "Connect" }));
    await waitFor(() => expect(fake.argsOf("start_tunnel")).toHaveLength(1));
    expect(fake.argsOf("start_tunnel")[0]).toMatchObject({ db_user: "alice", db_roles: ["reader"], port: null });
  });

  it("closes the dialog with Escape", async () => {
    fakeBackend({ databases: () => list, suggest_port: () => ({ remembered: null, remembered_free: false, free: 1, socket_dir: "/run/user/0/postern" }) });
    render(<Databases toast={() => {}} onConnected={() => {}} />);
    fireEvent.click(await screen.findByRole("button", { name: "Connect to demo-pg" }));
    fireEvent.keyDown(screen.getByRole("dialog"), { key: "Escape" });
    expect(screen.queryByRole("dialog")).toBeNull();
  });
});
