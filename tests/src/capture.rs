//! tcpdump as the reference counter.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::cmd;
use super::pcap::Capture;

/// A running `tcpdump -i IF -w FILE -U -n -s 256`. [`Tcpdump::stop`] stops it
/// with SIGINT (so it flushes) and parses the file; dropping it without
/// `stop` kills it.
pub struct Tcpdump {
    child: Option<Child>,
    /// The pcap file.
    pub file: PathBuf,
    stderr: PathBuf,
}

impl Tcpdump {
    /// Starts capturing on a root-namespace interface and returns once
    /// tcpdump says it is listening.
    pub fn start(iface: &str, dir: &Path) -> Self {
        Self::start_filtered(iface, dir, &[])
    }

    /// [`Tcpdump::start`] with a capture filter (tcpdump's words, e.g.
    /// `["udp", "and", "port", "5000"]`). On `any` it also sees interfaces
    /// created after it started: the reference for a new interface.
    pub fn start_filtered(iface: &str, dir: &Path, filter: &[&str]) -> Self {
        let file = dir.join(format!("{iface}.pcap"));
        let stderr = dir.join(format!("{iface}.tcpdump.log"));
        let log = std::fs::File::create(&stderr).expect("create tcpdump log");
        let f = file.to_string_lossy().into_owned();
        // -p: leave promiscuous mode alone; -Z root: Debian's tcpdump would
        // otherwise drop to user `tcpdump` and may not write FILE;
        // --immediate-mode: hand over every packet at once, not in ring
        // blocks that are lost if the interface goes away first.
        let child = Command::new("tcpdump")
            .args([
                "-i",
                iface,
                "-w",
                &f,
                "-U",
                "-n",
                "-p",
                "-s",
                "256",
                "-Z",
                "root",
                "--immediate-mode",
            ])
            .args(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start tcpdump: {e} (apt-get install tcpdump)"));
        let mut guard = Tcpdump {
            child: Some(child),
            file,
            stderr,
        };
        let listening = cmd::wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&guard.stderr)
                .unwrap_or_default()
                .contains("listening on")
        });
        if !listening {
            let status = guard
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            panic!(
                "tcpdump on {iface} not listening after 10 s (status {status:?}): {}",
                guard.log()
            );
        }
        guard
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stops it (SIGINT, it writes everything out) and parses the capture.
    /// Panics if tcpdump reports dropped packets.
    pub fn stop(mut self) -> Capture {
        let mut child = self.child.take().expect("running");
        cmd::kill(child.id(), libc::SIGINT);
        let mut done = false;
        cmd::wait_until(Duration::from_secs(10), || {
            done = matches!(child.try_wait(), Ok(Some(_)));
            done
        });
        if !done {
            let _ = child.kill();
        }
        let _ = child.wait();
        let log = self.log();
        // "N packets dropped by kernel" must be 0 for the capture to be a reference.
        let dropped = log
            .lines()
            .find(|l| l.ends_with("packets dropped by kernel"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        assert_eq!(
            dropped, 0,
            "tcpdump dropped packets, its counts are no reference: {log}"
        );
        Capture::read(&self.file)
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
