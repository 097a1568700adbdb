//! `close-window DISPLAY PID`: asks the windows of a process to close, as a
//! window manager does when a person clicks the close button. For
//! `scripts/desktop-metrics`, whose Xvfb has no window manager.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(display), Some(pid)) = (args.next(), args.next().and_then(|p| p.parse().ok())) else {
        eprintln!("usage: close-window DISPLAY PID");
        std::process::exit(2);
    };
    if postern_tests::desktop::close_windows_of(&display, pid) == 0 {
        eprintln!("close-window: process {pid} has no window on {display}");
        std::process::exit(1);
    }
}
