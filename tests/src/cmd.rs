//! Running helper programs (ip, ethtool, docker, ...) with useful failures.

use std::process::{Command, Output};

/// Runs `prog args...`, panics with its stderr unless it exits 0, returns stdout.
pub fn run(prog: &str, args: &[&str]) -> String {
    let out = output(prog, args);
    assert!(
        out.status.success(),
        "`{} {}` failed ({}): {}{}",
        prog,
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `prog args...` for cleanup: failures are ignored (the thing may be gone
/// already). Returns whether it exited 0.
pub fn run_quiet(prog: &str, args: &[&str]) -> bool {
    Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs `prog args...` and returns the raw output; panics only if it cannot be
/// started at all.
pub fn output(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{prog}`: {e} (is it installed?)"))
}

/// A finished command's stdout and stderr, one after the other (for messages).
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `prog` is found in `PATH` (or is an existing path).
pub fn exists(prog: &str) -> bool {
    if prog.contains('/') {
        return std::path::Path::new(prog).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// Sends `sig` to `pid`; false if the process does not exist.
pub fn kill(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// `FLOWLENS_TEST_TIME_SCALE` (default 1): every harness timeout and settle
/// time is multiplied by it. The kernel matrix sets it for its emulated CPU,
/// where a process start or a capture's last packets take many times longer.
pub fn time_scale() -> u32 {
    std::env::var("FLOWLENS_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Polls `cond` every 20 ms until it holds or `timeout` (× [`time_scale`]) passes.
pub fn wait_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout * time_scale();
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
