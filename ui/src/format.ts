// Small formatting helpers: sizes, durations, times.

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** 42 s, 3 min 5 s, 2 h 10 min, 3 d 4 h. */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** "in 7 h 59 min" / "5 min ago". */
export function relative(unix: number, now: number): string {
  const d = unix - now;
  return d >= 0 ? `in ${duration(d)}` : `${duration(-d)} ago`;
}

export function clock(unix: number): string {
  return new Date(unix * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function nowUnix(): number {
  return Date.now() / 1000;
}

/** "demo_reader@shop", "demo_reader", "shop" or "". */
export function target(user: string | null, db: string | null): string {
  if (user && db) return `${user}@${db}`;
  return user ?? db ?? "";
}
