//! Outputs and signals through the real binary: JSON lines into a pipe whose
//! reader goes away, into a file that cannot be written (`/dev/full`), a
//! file rotated under it with SIGHUP (as logrotate does), and a path whose
//! directory does not exist. Run as root, one at a time:
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test e2e_outputs -- --test-threads=1`

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flowlens_tests::{
    cmd, flowlens, records, scenario, sleep_ms, ArtifactDir, Flowlens, Place, Proc, VethNetns,
};

/// A `flowlens run` started by hand (stdout as the test needs it), killed on drop.
struct Run {
    child: Child,
    stderr: std::path::PathBuf,
}

impl Run {
    fn start(art: &ArtifactDir, args: &[&str], stdout: Stdio) -> Self {
        let stderr = art.path().join("flowlens.stderr");
        let log = std::fs::File::create(&stderr).expect("stderr file");
        let child = Command::new(flowlens::binary())
            // No web server (as the harness): parallel runs would share 127.0.0.1:8647 and its history file.
            .env("FLOWLENS_NO_WEB", "true")
            .arg("run")
            .args(["--export-interval", "1s"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("spawn flowlens");
        let run = Run { child, stderr };
        let ready = cmd::wait_until(Duration::from_secs(15), || {
            run.log().contains("flowlens running")
        });
        assert!(ready, "flowlens did not start:\n{}", run.log());
        run
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its exit code within `within`, or `None` if it still runs.
    fn exit_within(&mut self, within: Duration) -> Option<i32> {
        let mut code = None;
        cmd::wait_until(within, || {
            code = self
                .child
                .try_wait()
                .ok()
                .flatten()
                .map(|s| s.code().unwrap_or(128 + s.signal_number()));
            code.is_some()
        });
        code
    }
}

trait SignalNumber {
    fn signal_number(&self) -> i32;
}

impl SignalNumber for std::process::ExitStatus {
    fn signal_number(&self) -> i32 {
        std::os::unix::process::ExitStatusExt::signal(self).unwrap_or(0)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            cmd::kill(self.child.id(), libc::SIGTERM);
            if self.exit_within(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Pings from the namespace to the host end: `count` echoes, 0.1 s apart.
fn ping(net: &VethNetns, count: u32) -> Proc {
    let c = count.to_string();
    let target = net.host_v4.to_string();
    Proc::spawn(
        Place::Host,
        None,
        &[
            "ip", "netns", "exec", &net.ns, "ping", "-c", &c, "-i", "0.1", "-W", "1", &target,
        ],
    )
}

/// `flowlens run --jsonl - | head -1`: the reader goes away after one line;
/// flowlens ends cleanly (final flush, detach, exit 0) within seconds.
#[test]
fn a_closed_stdout_ends_the_run_cleanly() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let mut run = Run::start(
            &art,
            &["--iface", &net.host_if, "--jsonl", "-"],
            Stdio::piped(),
        );
        let pinger = ping(&net, 100);
        let stdout = run.child.stdout.take().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read a line");
        assert!(first.starts_with('{'), "not a JSON line: {first:?}");
        // Dropping the reader closes the pipe (as `head -1` exiting does).
        let code = run.exit_within(Duration::from_secs(8));
        let log = run.log();
        assert_eq!(
            code,
            Some(0),
            "flowlens must end with 0 once its stdout is closed; log:\n{log}"
        );
        for said in [
            "Standard output was closed",
            "Stopping: flushing the last interval",
            "flowlens stopped",
        ] {
            assert!(log.contains(said), "log lacks {said:?}:\n{log}");
        }
        assert!(!log.contains("raise the"), "wrong advice:\n{log}");
        assert!(
            flowlens::attached_programs(&net.host_if).is_empty(),
            "programs left attached"
        );
        drop(pinger);
    });
}

/// `--jsonl /dev/full`: an error that names the output and the cause, with
/// advice that fits it, and a non-zero exit (nothing can be written).
#[test]
fn an_unwritable_file_is_an_error_that_says_why() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let mut run = Run::start(
            &art,
            &["--iface", &net.host_if, "--jsonl", "/dev/full"],
            Stdio::null(),
        );
        let pinger = ping(&net, 100);
        let code = run.exit_within(Duration::from_secs(10));
        let log = run.log();
        assert_eq!(code, Some(1), "nothing can be written: exit 1; log:\n{log}");
        let error = log
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_else(|| panic!("no final error line:\n{log}"));
        assert!(
            error.contains("JSON lines file '/dev/full'")
                && error.contains("No space left on device"),
            "{error}"
        );
        let failed = log
            .lines()
            .find(|l| l.contains("Writing records failed"))
            .unwrap_or_else(|| panic!("no ERROR for the failed write:\n{log}"));
        assert!(
            failed.contains("file system is full") && failed.contains("'/dev/full'"),
            "{failed}"
        );
        assert!(
            log.contains("records_lost_sink") && !log.contains("raise the"),
            "the loss is counted, with advice that fits:\n{log}"
        );
        assert!(
            log.contains("flowlens stopped"),
            "it flushes and detaches before it exits:\n{log}"
        );
        drop(pinger);
    });
}

/// Rotation as logrotate does it: the file is renamed, SIGHUP makes
/// flowlens write a new one; every record is in one of the two, none lost.
#[test]
fn sighup_reopens_the_jsonl_file() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let fl = Flowlens::start(art.path(), &[&net.host_if], &[]);
        let mut pinger = ping(&net, 40);
        sleep_ms(2000);
        let rotated = art.path().join("flowlens.jsonl.1");
        std::fs::rename(&fl.jsonl, &rotated).expect("rotate");
        assert!(fl.signal(libc::SIGHUP), "SIGHUP");
        let reopened = cmd::wait_until(Duration::from_secs(3), || {
            fl.log().contains("Reopened the output file (SIGHUP)")
        });
        assert!(reopened, "no reopen logged:\n{}", fl.log());
        pinger.wait_success();
        sleep_ms(1500);
        let new_path = fl.jsonl.clone();
        let (after, log) = fl.stop_with_log();
        let before = flowlens::read_jsonl(&rotated);
        assert!(
            !before.is_empty() && !after.is_empty(),
            "records before ({}) and after ({}) the rotation expected; log:\n{log}",
            before.len(),
            after.len()
        );
        assert!(new_path.exists(), "the new file was not created");
        let all: Vec<_> = before.into_iter().chain(after).collect();
        let convs = records::conversations(&all);
        let echo: Vec<_> = convs
            .values()
            .filter(|c| {
                c.proto == "icmp"
                    && c.client.map(|a| a.ip()) == Some(IpAddr::V4(net.peer_v4))
                    && c.server.map(|a| a.ip()) == Some(IpAddr::V4(net.host_v4))
            })
            .collect();
        assert_eq!(echo.len(), 1, "{}", records::summary(&convs));
        assert_eq!(
            (echo[0].packets_c2s, echo[0].packets_s2c),
            (40, 40),
            "every echo counted across the rotation: {}",
            echo[0].describe()
        );
    });
}

/// An output path whose directory does not exist: an error that names the
/// directory (flowlens does not create it; docs/configuration.md).
#[test]
fn a_missing_output_directory_is_named() {
    flowlens_tests::assert_root();
    let dir = std::env::temp_dir().join(format!("flowlens-nodir-{}", std::process::id()));
    let path = dir.join("sub").join("flows.jsonl");
    let out = Command::new(flowlens::binary())
        .env("FLOWLENS_NO_WEB", "true")
        .args(["run", "--iface", "lo", "--jsonl"])
        .arg(&path)
        .output()
        .expect("run flowlens");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("the directory '{}'", dir.join("sub").display()))
            && err.contains("does not exist"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing may be created");
}

/// Every record carries the length of its interval: the time since the
/// previous export, as the timestamps say; the shutdown flush a shorter one.
#[test]
fn records_carry_their_interval_length() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let fl = Flowlens::start(art.path(), &[&net.host_if], &[]);
        // Traffic in every interval, until after the stop.
        let pinger = ping(&net, 60);
        sleep_ms(3400);
        let (recs, log) = fl.stop_with_log();
        drop(pinger);
        let mut exports: Vec<(i128, u64)> = recs
            .iter()
            .map(|r| {
                (
                    i128::from(r["ts_unix_ns"].as_u64().expect("ts_unix_ns")),
                    r["interval_ms"].as_u64().expect("interval_ms"),
                )
            })
            .collect();
        exports.sort_unstable();
        exports.dedup();
        let mut ts: Vec<i128> = exports.iter().map(|e| e.0).collect();
        ts.dedup();
        assert_eq!(
            ts.len(),
            exports.len(),
            "one interval length per export: {exports:?}"
        );
        assert!(exports.len() >= 3, "{exports:?}\n{log}");
        for w in exports.windows(2) {
            let ((t0, _), (t1, ms)) = (w[0], w[1]);
            let gap_ms = (t1 - t0) / 1_000_000;
            assert!(
                (gap_ms - i128::from(ms)).abs() <= 2,
                "interval_ms {ms} vs {gap_ms} ms between the exports: {exports:?}"
            );
        }
        let (_, last) = exports[exports.len() - 1];
        assert!(
            last < 1000,
            "the shutdown flush covers less than an interval: {exports:?}"
        );
    });
}

/// The on-screen summary (and the log) say when the weaker AF_PACKET
/// capture is in use; eBPF mode's summary does not.
#[test]
fn the_summary_says_when_afpacket_capture_is_in_use() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        for (mode, extra) in [
            ("afpacket", &["--capture", "afpacket"][..]),
            ("ebpf", &[][..]),
        ] {
            let out_path = art.path().join(format!("summary-{mode}.out"));
            let out = std::fs::File::create(&out_path).expect("summary file");
            let mut args = vec!["--iface", net.host_if.as_str()];
            args.extend(extra);
            let run = Run::start(&art, &args, Stdio::from(out));
            let pinger = ping(&net, 15);
            sleep_ms(2500);
            let log = run.log();
            drop(run);
            drop(pinger);
            let text = std::fs::read_to_string(&out_path).expect("summary");
            assert!(
                text.contains("CLIENT PROCESS"),
                "{mode}: no summary:\n{text}"
            );
            let said = text.contains("AF_PACKET capture (weaker than eBPF)");
            assert_eq!(said, mode == "afpacket", "{mode}:\n{text}");
            if mode == "afpacket" {
                let header = text.lines().position(|l| l.starts_with("── "));
                let note = text.lines().position(|l| l.contains("AF_PACKET capture"));
                assert_eq!(
                    note,
                    header.map(|h| h + 1),
                    "the note follows the header:\n{text}"
                );
                assert!(
                    log.contains("Capturing with AF_PACKET as asked: weaker than eBPF"),
                    "{log}"
                );
            }
        }
    });
}
