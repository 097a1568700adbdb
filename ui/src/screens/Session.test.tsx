import { fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { describe, expect, it, vi } from "vitest";
import type { AppState } from "../bindings";
import { fail, fakeBackend, session } from "../test/fake";
import { Session } from "./Session";

const state = { profiles: [] } as unknown as AppState;

function show(toast = vi.fn()) {
  render(<Session state={state} session={session} now={Date.now()} toast={toast} onRelogin={() => {}} onChanged={async () => {}} />);
  return screen.getByRole("checkbox", { name: "Start Postern at login (in the tray)" }) as HTMLInputElement;
}

describe("Session", () => {
  it("shows whether the app starts at login and changes it", async () => {
    let enabled = false;
    const fake = fakeBackend({
      autostart: () => enabled,
      set_autostart: (args) => (enabled = args.enabled),
    });
    const box = show();
    await waitFor(() => expect(box.disabled).toBe(false));
    expect(box.checked).toBe(false);

    fireEvent.click(box);
    await waitFor(() => expect(box.checked).toBe(true));
    expect(fake.argsOf("set_autostart")).toEqual([{ enabled: true }]);

    fireEvent.click(box);
    await waitFor(() => expect(box.checked).toBe(false));
    expect(fake.argsOf("set_autostart")[1]).toEqual({ enabled: false });
  });

  it("says so when the setting cannot be changed, and keeps what is in force", async () => {
    fakeBackend({
      autostart: () => false,
      set_autostart: () => fail("local", "the start-at-login setting could not be changed: read-only file system"),
    });
    const toast = vi.fn();
    const box = show(toast);
    await waitFor(() => expect(box.disabled).toBe(false));
    fireEvent.click(box);
    await waitFor(() =>
      expect(toast).toHaveBeenCalledWith("the start-at-login setting could not be changed: read-only file system", "error"),
    );
    expect(box.checked).toBe(false);
  });
});
