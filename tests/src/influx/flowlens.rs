//! `flowlens run` with InfluxDB flags, for the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::wait_for;

/// The flags that make flowlens write to database `db` at `url`, creating it,
/// with its spool in `spool`.
pub fn influx_args(url: &str, db: &str, spool: &Path) -> Vec<String> {
    [
        "--influx-url",
        url,
        "--influx-db",
        db,
        "--influx-create-db",
        "--influx-spool-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([spool.to_string_lossy().into_owned()])
    .collect()
}

/// `flowlens run --iface IF --export-interval 1s --jsonl FILE` plus extra
/// arguments (the InfluxDB flags). Dropping it sends SIGTERM and waits.
pub struct FlowlensRun {
    child: Option<Child>,
    /// JSON lines output (appended to across runs).
    pub jsonl: PathBuf,
    stderr: PathBuf,
}

impl FlowlensRun {
    /// Starts it; does not wait.
    pub fn spawn(
        dir: &Path,
        iface: &str,
        extra: &[String],
        env: &[(&str, &str)],
        tag: &str,
    ) -> Self {
        let bin = crate::flowlens::binary();
        assert!(
            bin.is_file(),
            "flowlens binary {} not found: cargo build -p flowlens-collector",
            bin.display()
        );
        let jsonl = dir.join("flowlens.jsonl");
        let stderr = dir.join(format!("flowlens-{tag}.stderr"));
        let mut args: Vec<String> = [
            "run",
            "--iface",
            iface,
            "--export-interval",
            "1s",
            "--jsonl",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(jsonl.to_string_lossy().into_owned());
        args.extend(extra.iter().cloned());
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .env_remove("INFLUX_TOKEN")
            .env_remove("INFLUX_USERNAME")
            .env_remove("INFLUX_PASSWORD")
            .env("FLOWLENS_NO_WEB", "true");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start flowlens");
        FlowlensRun {
            child: Some(child),
            jsonl,
            stderr,
        }
    }

    /// Starts it and waits until it logs "flowlens running" (panics if it exits).
    pub fn start(
        dir: &Path,
        iface: &str,
        extra: &[String],
        env: &[(&str, &str)],
        tag: &str,
    ) -> Self {
        let mut f = Self::spawn(dir, iface, extra, env, tag);
        let mut exited = None;
        let ready = wait_for(Duration::from_secs(30), || {
            exited = f.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            exited.is_some() || f.log().contains("flowlens running")
        });
        if let Some(st) = exited {
            panic!("flowlens exited during start-up ({st}):\n{}", f.log());
        }
        assert!(ready, "flowlens not running after 30 s:\n{}", f.log());
        f
    }

    /// Waits for it to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut st = None;
        wait_for(timeout, || {
            st = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            st.is_some()
        });
        if st.is_some() {
            self.child = None;
        }
        st
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, wait (20 s at most), assert exit 0; returns the log.
    pub fn stop(mut self) -> String {
        let st = self.terminate();
        let log = self.log();
        assert!(
            st.is_some_and(|s| s.success()),
            "flowlens did not exit 0 on SIGTERM: {st:?}\n{}",
            crate::flowlens::tail(&log, 40)
        );
        log
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        crate::cmd::kill(child.id(), libc::SIGTERM);
        let mut st = None;
        wait_for(Duration::from_secs(20), || {
            st = child.try_wait().ok().flatten();
            st.is_some()
        });
        if st.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        st
    }
}

impl Drop for FlowlensRun {
    fn drop(&mut self) {
        self.terminate();
    }
}
