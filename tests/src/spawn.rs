//! Processes the tests start: where they run (host or a fake container), as
//! whom, and who they turned out to be (read back from /proc).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cgroup::FakeContainer;
use super::cmd;

/// uid/gid of `nobody`/`nogroup` on Debian.
pub const NOBODY: u32 = 65534;

/// Where a process runs.
#[derive(Clone, Copy, Debug)]
pub enum Place<'a> {
    /// The root network namespace and this test's own cgroup.
    Host,
    /// A fake container's namespace and cgroup.
    In(&'a FakeContainer),
}

/// The full argv for `cmd` run at `place`, as `uid` (and gid = uid, no
/// supplementary groups) when given.
pub fn argv(place: Place<'_>, uid: Option<u32>, cmd: &[&str]) -> Vec<String> {
    let mut inner: Vec<String> = Vec::new();
    if let Some(uid) = uid {
        let uid = uid.to_string();
        inner.extend([
            "/usr/bin/setpriv".into(),
            "--reuid".into(),
            uid.clone(),
            "--regid".into(),
            uid,
        ]);
        inner.extend(["--clear-groups".into(), "--".into()]);
    }
    inner.extend(cmd.iter().map(|s| s.to_string()));
    match place {
        Place::Host => inner,
        Place::In(c) => c.wrap(&inner),
    }
}

/// Who a process is, read from `/proc/<pid>` while it runs (or built from
/// known values for processes too short-lived to read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcIdentity {
    /// Thread group id.
    pub pid: u32,
    /// `/proc/<pid>/comm`.
    pub comm: String,
    /// `readlink /proc/<pid>/exe` (a path in the process's own mount namespace).
    pub exe: String,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// The `0::` line of `/proc/<pid>/cgroup`.
    pub cgroup: String,
}

impl ProcIdentity {
    /// Reads it; panics if the process is gone.
    pub fn read(pid: u32) -> Self {
        let proc_file = |f: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/{f}"))
                .unwrap_or_else(|e| panic!("/proc/{pid}/{f}: {e} (process gone?)"))
        };
        let status = proc_file("status");
        let id_field = |key: &str| -> u32 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .unwrap_or_else(|e| panic!("readlink /proc/{pid}/exe: {e}"));
        ProcIdentity {
            pid,
            comm: proc_file("comm").trim_end().to_owned(),
            exe: exe.to_string_lossy().into_owned(),
            uid: id_field("Uid:"),
            gid: id_field("Gid:"),
            cgroup: cgroup_v2_of(pid),
        }
    }
}

/// The cgroup v2 path of a running process (`0::<path>` in /proc/<pid>/cgroup).
pub fn cgroup_v2_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no cgroup v2 line for pid {pid}"))
}

/// A started process with its stdout as a stream of lines and its stderr
/// collected. Dropping it kills it (SIGKILL) if still running.
pub struct Proc {
    /// Its pid (the same through the `exec` chain of [`argv`]).
    pub pid: u32,
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout_seen: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `cmd` at `place` as `uid`, with a pipe for stdin.
    pub fn spawn(place: Place<'_>, uid: Option<u32>, cmd: &[&str]) -> Proc {
        Self::spawn_with_stdin(place, uid, cmd, Stdio::piped())
    }

    /// Like [`Proc::spawn`], with the given stdin.
    pub fn spawn_with_stdin(
        place: Place<'_>,
        uid: Option<u32>,
        cmd: &[&str],
        stdin: Stdio,
    ) -> Proc {
        let argv = argv(place, uid, cmd);
        let what = argv
            .iter()
            .map(|a| if a.len() > 60 { "<...>" } else { a })
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let (tx, lines) = channel();
        let stdout_seen = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let seen = Arc::clone(&stdout_seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                seen.lock().expect("stdout log").push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let err_buf = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err_pipe.read_to_string(&mut s);
            err_buf.lock().expect("stderr log").push_str(&s);
        });
        Proc {
            pid: child.id(),
            what,
            stdin: child.stdin.take(),
            child,
            lines,
            stdout_seen,
            stderr,
        }
    }

    /// Waits (up to 15 s × `time_scale`) for a stdout line whose first word
    /// is `word`; returns the words after it.
    pub fn expect_line(&mut self, word: &str) -> Vec<String> {
        let deadline =
            std::time::Instant::now() + Duration::from_secs(15) * super::cmd::time_scale();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let mut words = line.split_whitespace().map(str::to_owned);
                    if words.next().as_deref() == Some(word) {
                        return words.collect();
                    }
                }
                Err(_) => {
                    // Give the stderr reader a moment after an exit.
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "`{}`: no `{word}` line within 15 s; status {:?}; stdout {:?}; stderr {}",
                        self.what,
                        self.child.try_wait().ok().flatten(),
                        self.stdout_seen.lock().expect("stdout log"),
                        self.stderr.lock().expect("stderr log")
                    );
                }
            }
        }
    }

    /// Writes a line to its stdin, in one write: `writeln!` on the unbuffered
    /// pipe wrote the text and the newline separately, and a child that acts
    /// on the first byte and exits (the churn server's select loop) turned the
    /// second write into EPIPE.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        if let Err(e) = stdin.write_all(format!("{line}\n").as_bytes()) {
            // Gone already: say how it ended.
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "`{}`: writing {line:?} to its stdin failed ({e}); status {:?}; stdout {:?}; stderr {}",
                self.what,
                self.child.try_wait().ok().flatten(),
                self.stdout_seen.lock().expect("stdout log"),
                self.stderr.lock().expect("stderr log")
            );
        }
    }

    /// Waits for exit (at most `timeout`, then kills it and panics).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        drop(self.stdin.take());
        let mut status = None;
        cmd::wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        match status {
            Some(s) => s,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` did not exit within {timeout:?}; stderr {}",
                    self.what,
                    self.stderr_text()
                );
            }
        }
    }

    /// Waits (up to 30 s) and asserts exit status 0.
    pub fn wait_success(&mut self) {
        let status = self.wait(Duration::from_secs(30) * super::cmd::time_scale());
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            status.success(),
            "`{}` failed: {status}; stdout {:?}; stderr {}",
            self.what,
            self.stdout_seen.lock().expect("stdout log"),
            self.stderr_text()
        );
    }

    /// What it wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr log").clone()
    }

    /// Reads its identity from /proc (it must be running).
    pub fn identity(&self) -> ProcIdentity {
        ProcIdentity::read(self.pid)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The identity a process started by [`argv`] at `place` as `uid` will have
/// once it has exec'd `exe` (for processes that exit before /proc can be
/// read). `exe` is resolved like the kernel does (symlinks followed).
pub fn expected_identity(
    place: Place<'_>,
    uid: Option<u32>,
    pid: u32,
    comm: &str,
    exe: &str,
) -> ProcIdentity {
    let exe = std::fs::canonicalize(exe).unwrap_or_else(|e| panic!("{exe}: {e}"));
    ProcIdentity {
        pid,
        comm: comm.to_owned(),
        exe: exe.to_string_lossy().into_owned(),
        uid: uid.unwrap_or(0),
        gid: uid.unwrap_or(0),
        cgroup: match place {
            Place::Host => cgroup_v2_of(std::process::id()),
            Place::In(c) => c.cgroup.clone(),
        },
    }
}

/// Waits (at most 10 s) until `/proc/<pid>/comm` is `comm` (a shell that
/// `exec`s the real program), then reads the identity.
pub fn identity_once_comm(pid: u32, comm: &str) -> ProcIdentity {
    let read = || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let ok = cmd::wait_until(Duration::from_secs(10), || read().trim_end() == comm);
    assert!(
        ok,
        "pid {pid} never became {comm:?} (comm {:?})",
        read().trim_end()
    );
    ProcIdentity::read(pid)
}

/// The user name of `uid` from the passwd database.
pub fn user_name(uid: u32) -> String {
    let out = cmd::run("getent", &["passwd", &uid.to_string()]);
    out.split(':').next().unwrap_or_default().to_owned()
}
