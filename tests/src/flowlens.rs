//! The collector binary under test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::cmd;

/// Path of the binary: `$FLOWLENS_BIN`, else `<workspace>/target/debug/flowlens`
/// (this crate does not build it: `cargo build -p flowlens-collector` first).
pub fn binary() -> PathBuf {
    match std::env::var_os("FLOWLENS_BIN") {
        Some(p) => PathBuf::from(p),
        None => crate::repo_root().join("target/debug/flowlens"),
    }
}

/// A running `flowlens run --iface ... --export-interval 1s --jsonl FILE`.
/// Dropping it sends SIGTERM and waits; [`Flowlens::stop`] does the same and
/// returns the records.
pub struct Flowlens {
    child: Option<Child>,
    ifaces: Vec<String>,
    /// The JSON lines output.
    pub jsonl: PathBuf,
    stderr: PathBuf,
    /// Ids of the BPF programs this process loaded (new since just before it started).
    programs: BTreeMap<u64, String>,
}

impl Flowlens {
    /// Starts it on `ifaces` with extra environment variables and waits until
    /// it logs "flowlens running" (at most 10 s, or
    /// `$FLOWLENS_READY_TIMEOUT_SECS`; it must not exit meanwhile).
    pub fn start(dir: &Path, ifaces: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_with_args(dir, ifaces, env, &[])
    }

    /// [`Flowlens::start`] with `extra` flags after `run` (e.g. `--capture afpacket`).
    pub fn start_with_args(
        dir: &Path,
        ifaces: &[&str],
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Self {
        Self::start_wrapped(dir, ifaces, env, extra, &[])
    }

    /// [`Flowlens::start_with_args`] with the binary run through `wrapper`
    /// (e.g. `setpriv --bounding-set -bpf ... --`).
    pub fn start_wrapped(
        dir: &Path,
        ifaces: &[&str],
        env: &[(&str, &str)],
        extra: &[&str],
        wrapper: &[&str],
    ) -> Self {
        let bin = binary();
        assert!(
            bin.is_file(),
            "flowlens binary {} not found: build it (cargo build -p flowlens-collector) or set FLOWLENS_BIN",
            bin.display()
        );
        let jsonl = dir.join("flowlens.jsonl");
        let stderr = dir.join("flowlens.stderr");
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(extra.iter().map(|a| a.to_string()));
        for i in ifaces {
            args.extend(["--iface".into(), i.to_string()]);
        }
        args.extend(["--export-interval".into(), "1s".into(), "--jsonl".into()]);
        args.push(jsonl.to_string_lossy().into_owned());
        let before = flowlens_programs();
        let log = std::fs::File::create(&stderr).expect("create flowlens log");
        let mut command = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        // No web server unless a test asks for it (`FLOWLENS_NO_WEB=false`):
        // parallel runs would share 127.0.0.1:8647 and the history file.
        command.env("FLOWLENS_NO_WEB", "true");
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let ifaces = ifaces.iter().map(|s| s.to_string()).collect();
        let mut guard = Flowlens {
            child: Some(child),
            ifaces,
            jsonl,
            stderr,
            programs: BTreeMap::new(),
        };
        let mut exited = None;
        let secs = std::env::var("FLOWLENS_READY_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        let ready = cmd::wait_until(Duration::from_secs(secs), || {
            exited = guard
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            exited.is_some() || guard.log().contains("flowlens running")
        });
        if let Some(status) = exited {
            panic!(
                "flowlens {} exited during start-up ({status}); stderr:\n{}",
                args.join(" "),
                guard.log()
            );
        }
        if !ready {
            eprintln!(
                "warning: flowlens did not log \"flowlens running\" within {secs} s; going on"
            );
        }
        // New since the start, and held by this process: another flowlens
        // (another engineer's test, started at the same moment) loads
        // programs of the same names.
        let held = guard
            .child
            .as_ref()
            .map(|c| held_programs(c.id()))
            .unwrap_or_default();
        guard.programs = flowlens_programs()
            .into_iter()
            .filter(|(id, _)| !before.contains_key(id) && held.contains(id))
            .collect();
        guard
    }

    /// Names of the BPF programs this process loaded.
    pub fn programs(&self) -> Vec<String> {
        self.programs.values().cloned().collect()
    }

    /// Sends `sig` to the process; false if it is gone.
    pub fn signal(&self, sig: i32) -> bool {
        self.child.as_ref().is_some_and(|c| cmd::kill(c.id(), sig))
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, wait (at most 15 s), assert exit status 0, and return every
    /// line of the JSON lines file parsed. Programs still attached to the
    /// monitored interfaces afterwards are a failure reported at the end of
    /// the scenario (see [`super::defer_failure`]), after the record checks.
    pub fn stop(mut self) -> Vec<Value> {
        let status = self.terminate();
        assert!(
            status.as_ref().is_some_and(|s| s.success()),
            "flowlens did not exit 0 on SIGTERM: {status:?}; stderr tail:\n{}",
            tail(&self.log(), 40)
        );
        // Without --iface it monitored everything: check every interface.
        let targets: Vec<String> = if self.ifaces.is_empty() {
            let entries = std::fs::read_dir("/sys/class/net")
                .into_iter()
                .flatten()
                .flatten();
            entries
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        } else {
            self.ifaces.clone()
        };
        for iface in &targets {
            let left = attached_programs(iface);
            if !left.is_empty() {
                super::defer_failure(format!(
                    "flowlens left programs attached to {iface} after exit: {left:?}"
                ));
            }
        }
        // TCX links do not show in `bpftool net` (7.1), but every attachment
        // keeps its program loaded: none may outlive the process.
        let still = |mine: &BTreeMap<u64, String>| -> Vec<String> {
            let now = flowlens_programs();
            mine.iter()
                .filter(|(id, _)| now.contains_key(id))
                .map(|(_, n)| n.clone())
                .collect()
        };
        let gone = cmd::wait_until(Duration::from_secs(5), || still(&self.programs).is_empty());
        if !gone {
            super::defer_failure(format!(
                "flowlens programs still loaded after exit: {:?}",
                still(&self.programs)
            ));
        }
        read_jsonl(&self.jsonl)
    }

    /// [`Self::stop`], and the whole log read after the exit (so it holds the
    /// final interval, flushed at shutdown).
    pub fn stop_with_log(self) -> (Vec<Value>, String) {
        let path = self.stderr.clone();
        let recs = self.stop();
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        (recs, log)
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        cmd::kill(child.id(), libc::SIGTERM);
        let mut status = None;
        cmd::wait_until(Duration::from_secs(15), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }
}

impl Drop for Flowlens {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Parses a JSON lines file; panics on a line that is not a JSON object.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            Ok(v) => panic!("{}:{}: not a JSON object: {v}", path.display(), i + 1),
            Err(e) => panic!("{}:{}: invalid JSON ({e}): {l}", path.display(), i + 1),
        })
        .collect()
}

/// The loss counters by reason of the last "Data was lost" line of a flowlens
/// log (cumulative since it started; empty: it lost nothing).
pub fn losses_in_log(log: &str) -> BTreeMap<String, i64> {
    let Some(line) = log.lines().rfind(|l| l.contains("Data was lost")) else {
        return BTreeMap::new();
    };
    let map = line
        .split_once("by_reason=")
        .map(|(_, m)| m.trim())
        .unwrap_or_else(|| panic!("no by_reason in the loss line: {line}"));
    serde_json::from_str(map).unwrap_or_else(|e| panic!("{map}: {e}"))
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// XDP/TC/TCX/flow-dissector programs attached to `iface` (bpftool's view;
/// empty if bpftool is missing or the interface is gone).
pub fn attached_programs(iface: &str) -> Vec<String> {
    if !cmd::exists("bpftool") || super::netns::ifindex(iface).is_none() {
        return Vec::new();
    }
    let out = cmd::output("bpftool", &["-j", "net", "show", "dev", iface]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut found = Vec::new();
    for obj in v.as_array().into_iter().flatten() {
        for (kind, entries) in obj.as_object().into_iter().flatten() {
            for e in entries.as_array().into_iter().flatten() {
                found.push(format!("{kind}: {e}"));
            }
        }
    }
    found
}

/// Ids of the BPF programs process `pid` holds: through a program fd or a
/// link fd (both show `prog_id:` in `/proc/PID/fdinfo`).
pub fn held_programs(pid: u32) -> BTreeSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// Loaded BPF programs that belong to flowlens (`flowlens_*`), by id.
pub fn flowlens_programs() -> BTreeMap<u64, String> {
    let out = cmd::output("bpftool", &["-j", "prog", "show"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_owned())))
        .filter(|(_, n)| n.starts_with("flowlens_"))
        .collect()
}
