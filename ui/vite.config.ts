import { defineConfig } from "vitest/config";
import preact from "@preact/preset-vite";

// The app is served from ui/dist by Tauri; no dev server is needed for it.
export default defineConfig({
  plugins: [preact()],
  clearScreen: false,
  build: {
    target: "safari15",
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
  },
  test: {
    environment: "jsdom",
    globals: true,
    setupFiles: ["src/test/setup.ts"],
  },
});
