import { fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { describe, expect, it, vi } from "vitest";
import { fakeBackend, tunnel } from "../test/fake";
import { Tunnels } from "./Tunnels";
import { Queries } from "./Queries";

describe("Tunnels", () => {
  it("shows the address, live counters and copies what clients need", async () => {
    const fake = fakeBackend({ copy_text: () => null, stop_tunnel: () => null, set_favourite: () => tunnel({ favourite: true }) });
    const toast = vi.fn();
    const refresh = vi.fn(async () => {});
    render(<Tunnels tunnels={[tunnel()]} refresh={refresh} toast={toast} onQueries={() => {}} onBrowse={() => {}} />);
    expect(screen.getByText("127.0.0.1:40111")).toBeTruthy();
    expect(screen.getByText("3.0 MB")).toBeTruthy();
    expect(screen.getByText("2.0 KB")).toBeTruthy();
    expect(screen.getByText(/^2 min \d+ s$/)).toBeTruthy();

    fireEvent.click(screen.getByRole("button", { name: "Copy URI" }));
    await waitFor(() => expect(toast).toHaveBeenCalledWith("Connection URI copied."));
    expect(fake.argsOf("copy_text")[0]).toEqual({ text: "postgresql://demo_reader@127.0.0.1:40111/shop?sslmode=disable" });

    fireEvent.click(screen.getByRole("button", { name: "Favourite" }));
    await waitFor(() => expect(fake.argsOf("set_favourite")[0]).toEqual({ id: 1, favourite: true }));

    fireEvent.click(screen.getByRole("button", { name: "Stop" }));
    await waitFor(() => expect(fake.argsOf("stop_tunnel")[0]).toEqual({ id: 1 }));
  });

  it("shows refused connections and a port notice", () => {
    const notice = "Port 40111, used by this tunnel last time, is held by another program.";
    render(
      <Tunnels
        tunnels={[tunnel({ refused_connections: 3, port_notice: notice })]}
        refresh={async () => {}}
        toast={() => {}}
        onQueries={() => {}}
        onBrowse={() => {}}
      />,
    );
    expect(screen.getByText("Refused")).toBeTruthy();
    expect(screen.getByText("3")).toBeTruthy();
    expect(screen.getByRole("status").textContent).toBe(notice);
  });

  it("says how to open one when there are none", () => {
    const onBrowse = vi.fn();
    render(<Tunnels tunnels={[]} refresh={async () => {}} toast={() => {}} onQueries={() => {}} onBrowse={onBrowse} />);
    fireEvent.click(screen.getByRole("button", { name: "Browse databases" }));
    expect(onBrowse).toHaveBeenCalled();
  });

  it("shows a launcher's failure, such as pgAdmin not being installed", async () => {
    fakeBackend({
      open_pgadmin: () => {
        throw { kind: "pgadmin_missing", message: "PgAdmin 4 is not installed.", fingerprint: null };
      },
    });
    const toast = vi.fn();
    render(<Tunnels tunnels={[tunnel()]} refresh={async () => {}} toast={toast} onQueries={() => {}} onBrowse={() => {}} />);
    fireEvent.click(screen.getByRole("button", { name: "Open in pgAdmin" }));
    await waitFor(() => expect(toast).toHaveBeenCalledWith("PgAdmin 4 is not installed.", "error"));
  });
});

describe("Queries", () => {
  const running = {
    pid: 4242,
    user: "demo_reader",
    database: "shop",
    started_unix: Date.now() / 1000 - 75,
    duration_ms: 75_000,
    state: "active",
    wait_event: "PgSleep",
    query: "select pg_sleep(600)",
  };

  it("cancels a running statement and says so", async () => {
    let rows = [running];
    const fake = fakeBackend({
      queries: () => rows,
      cancel_query: ({ pid }) => {
        rows = [];
        return { outcome: "cancelled", message: `Cancelled the statement of process ${pid}.` };
      },
    });
    const toast = vi.fn();
    render(<Queries tunnel={tunnel()} toast={toast} refreshTunnels={async () => {}} onBack={() => {}} />);
    expect(await screen.findByText("select pg_sleep(600)")).toBeTruthy();
    expect(screen.getByText("1 min 15 s")).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Cancel" }));
    await waitFor(() => expect(toast).toHaveBeenCalledWith("Cancelled the statement of process 4242.", "info"));
    expect(fake.argsOf("cancel_query")[0]).toEqual({ id: 1, pid: 4242, terminate: false });
    await screen.findByText("Nothing is running.");
  });

  it("saves the runaway guard", async () => {
    const fake = fakeBackend({ queries: () => [], set_guard: () => tunnel({ warn_after_secs: 30, cancel_after_secs: 300 }) });
    const toast = vi.fn();
    render(<Queries tunnel={tunnel()} toast={toast} refreshTunnels={async () => {}} onBack={() => {}} />);
    fireEvent.input(screen.getByLabelText("Warn after (s)"), { target: { value: "30" } });
    fireEvent.input(screen.getByLabelText("Cancel after (s)"), { target: { value: "300" } });
    fireEvent.click(screen.getByRole("button", { name: "Save" }));
    await waitFor(() => expect(toast).toHaveBeenCalledWith("Runaway guard saved."));
    expect(fake.argsOf("set_guard")[0]).toEqual({ id: 1, warn_after_secs: 30, cancel_after_secs: 300 });
  });
});
