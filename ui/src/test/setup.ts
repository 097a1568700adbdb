// Vitest setup: every test talks to a fake backend (see fake.ts), never Tauri.
import { afterEach } from "vitest";
import { cleanup } from "@testing-library/preact";

afterEach(() => cleanup());
