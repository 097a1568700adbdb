import { fireEvent, render, screen, waitFor } from "@testing-library/preact";
import { describe, expect, it, vi } from "vitest";
import type { AppState } from "../bindings";
import { fail, fakeBackend, session } from "../test/fake";
import { SignIn } from "./SignIn";

const empty: AppState = { profiles: [], session: null, last_gateway: null, last_username: null };
const FP = "sha256:" + "ab".repeat(32);

function type(name: string, value: string) {
  const input = document.querySelector<HTMLInputElement>(`input[name=${name}]`)!;
  fireEvent.input(input, { target: { value } });
}

describe("SignIn", () => {
  it("asks to trust a new gateway's CA before signing in, then pins it", async () => {
    const fake = fakeBackend({
      gateway_info: ({ gateway }) => ({ gateway, fingerprint: FP, trusted: false, connectors: [] }),
      login_local: () => session,
    });
    const onSignedIn = vi.fn();
    render(<SignIn state={empty} expired={false} onSignedIn={onSignedIn} />);
    type("gateway", "127.0.0.1:3080");
    type("username", "alice");
    type("password", "pw");
    await screen.findByText(FP);
    const submit = screen.getByRole("button", { name: "Sign in" });
    expect(submit).toHaveProperty("disabled", true);
    fireEvent.click(screen.getByLabelText("I checked the fingerprint; trust this gateway"));
    expect(submit).toHaveProperty("disabled", false);
    fireEvent.click(submit);
    await waitFor(() => expect(onSignedIn).toHaveBeenCalled());
    expect(fake.argsOf("login_local")[0]).toEqual({
      gateway: "127.0.0.1:3080",
      username: "alice",
      password: "pw",
      totp: null,
      ca_pin: FP,
    });
  });

  it("asks for a one-time code when the account has one", async () => {
    let attempts = 0;
    const fake = fakeBackend({
      gateway_info: ({ gateway }) => ({ gateway, fingerprint: FP, trusted: true, connectors: [] }),
      login_local: ({ totp }) => {
        attempts++;
        return totp ? session : fail("totp_required", "Enter the one-time code from your authenticator app.");
      },
    });
    const onSignedIn = vi.fn();
    render(
      <SignIn
        state={{ ...empty, last_gateway: "127.0.0.1:3080", last_username: "alice" }}
        expired={false}
        onSignedIn={onSignedIn}
      />,
    );
    type("password", "pw");
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    const code = await screen.findByLabelText("One-time code");
    await waitFor(() => expect(document.activeElement).toBe(code));
    expect(screen.getByRole("alert").textContent).toContain("one-time code");
    type("totp", "123456");
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    await waitFor(() => expect(onSignedIn).toHaveBeenCalled());
    expect(attempts).toBe(2);
    expect(fake.argsOf("login_local")[1].totp).toBe("123456");
  });

  it("offers the one-time code field after a refusal", async () => {
    const fake = fakeBackend({
      gateway_info: ({ gateway }) => ({ gateway, fingerprint: FP, trusted: true, connectors: [] }),
      login_local: ({ totp }) =>
        totp === "123456" ? session : fail("refused", "Invalid username, password or one-time code"),
    });
    const onSignedIn = vi.fn();
    render(
      <SignIn
        state={{ ...empty, last_gateway: "127.0.0.1:3080", last_username: "alice" }}
        expired={false}
        onSignedIn={onSignedIn}
      />,
    );
    expect(screen.queryByLabelText("One-time code")).toBeNull();
    type("password", "pw");
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    await screen.findByLabelText("One-time code");
    type("password", "pw");
    type("totp", "123456");
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    await waitFor(() => expect(onSignedIn).toHaveBeenCalled());
    expect(fake.argsOf("login_local")[1].totp).toBe("123456");
  });

  it("offers single sign-on when the gateway has a connector", async () => {
    const fake = fakeBackend({
      gateway_info: ({ gateway }) => ({ gateway, fingerprint: FP, trusted: true, connectors: ["okta"] }),
      login_sso: () => session,
    });
    const onSignedIn = vi.fn();
    render(<SignIn state={{ ...empty, last_gateway: "gw.example.com:3080" }} expired={false} onSignedIn={onSignedIn} />);
    fireEvent.click(await screen.findByRole("button", { name: "Sign in with SSO" }));
    await waitFor(() => expect(onSignedIn).toHaveBeenCalled());
    expect(fake.argsOf("login_sso")[0]).toEqual({ gateway: "gw.example.com:3080", connector: null, ca_pin: null });
  });

  it("shows the gateway's refusal as a sentence", async () => {
    fakeBackend({
      gateway_info: ({ gateway }) => ({ gateway, fingerprint: FP, trusted: true, connectors: [] }),
      login_local: () => fail("refused", "Invalid username or password."),
    });
    render(<SignIn state={{ ...empty, last_gateway: "gw:3080", last_username: "bob" }} expired={false} onSignedIn={() => {}} />);
    type("password", "nope");
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    expect((await screen.findByRole("alert")).textContent).toBe("Invalid username or password.");
  });
});
