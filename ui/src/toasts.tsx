export interface Toast {
  id: number;
  text: string;
  tone: "info" | "warn" | "error";
}

/** Short messages in a polite live region; errors are announced assertively. */
export function Toasts(props: { toasts: Toast[] }) {
  return (
    <div class="toasts" aria-live="polite">
      {props.toasts.map((t) => (
        <div key={t.id} class={`toast ${t.tone}`} role={t.tone === "error" ? "alert" : "status"}>
          {t.text}
        </div>
      ))}
    </div>
  );
}
