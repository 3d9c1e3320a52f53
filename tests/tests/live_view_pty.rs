//! `flowlens run` with no output on a pseudo-terminal (python3's pty module
//! plays the terminal, 140×40): the live view draws the scenario's top
//! process, its container and a non-zero rate in place, takes `g` (group by
//! container) and `q` (quit: flowlens stops cleanly and prints the last
//! interval as plain text). The same run with stdout on a pipe prints the
//! plain summary and no escape sequences.
//! Needs root: `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test live_view_pty -- --test-threads=1`

use std::{
    net::IpAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use flowlens_tests::{agent, cmd, scenario, ArtifactDir, FakeContainer, Place, VethNetns, NOBODY};

/// Runs argv[1:] on a pty; copies everything it draws to $PTY_LOG; writes
/// each byte found in the file $PTY_KEYS (appended by the test) as a key.
const PTY: &str = r#"
import os, pty, sys, time, select, fcntl, termios, struct
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack('HHHH', 40, 140, 0, 0))
    os.environ['TERM'] = 'xterm-256color'
    os.execv(sys.argv[1], sys.argv[1:])
log = open(os.environ['PTY_LOG'], 'wb')
keys_path = os.environ['PTY_KEYS']
sent = 0
status = None
while status is None:
    try:
        keys = open(keys_path, 'rb').read()
    except OSError:
        keys = b''
    if len(keys) > sent:
        os.write(fd, keys[sent:])
        sent = len(keys)
    r, _, _ = select.select([fd], [], [], 0.1)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b''
        log.write(data)
        log.flush()
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        status = st
while True:
    try:
        data = os.read(fd, 65536)
    except OSError:
        break
    if not data:
        break
    log.write(data)
log.close()
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// The text of a terminal stream with CSI/OSC escapes removed.
fn strip(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('[') => {
                for d in it.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            Some(']') => {
                for d in it.by_ref() {
                    if d == '\u{7}' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Non-zero rates like `20.3 kB/s` (cells drawn apart may lose the space).
fn rates(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(p) = text[i..].find("B/s") {
        let end = i + p;
        let mut j = end;
        if j > 0 && b"kMGT".contains(&b[j - 1]) {
            j -= 1;
        }
        while j > 0 && b[j - 1] == b' ' {
            j -= 1;
        }
        let num_end = j;
        while j > 0 && (b[j - 1].is_ascii_digit() || b[j - 1] == b'.') {
            j -= 1;
        }
        let num = &text[j..num_end];
        if num.parse::<f64>().is_ok_and(|v| v > 0.0) {
            out.push(text[j..end + 3].to_owned());
        }
        i = end + 3;
    }
    out
}

/// Traffic for a few seconds: host (root) -> the container's UDP server (nobody).
fn traffic(net: &VethNetns, c: &FakeContainer) {
    let addr = IpAddr::V4(net.peer_v4);
    let mut srv = agent::udp_server(Place::In(c), Some(NOBODY), addr, 5301, 40, 1500);
    let (mut cl, _) = agent::udp_client_paced(
        Place::Host,
        Some(0),
        addr,
        5301,
        true,
        &[1200; 40],
        Duration::from_millis(100),
    );
    cl.wait_success();
    srv.wait_success();
}

fn flowlens_args(iface: &str) -> Vec<String> {
    ["run", "--iface", iface, "--export-interval", "1s"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn keys(path: &Path, k: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("keys file");
    f.write_all(k.as_bytes()).expect("key");
}

#[test]
fn live_view_on_a_pty_shows_the_top_process_and_its_rate() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let c = FakeContainer::new(u, &net);
        let log = art.path().join("pty.log");
        let key_file = art.path().join("keys");
        let mut child = Command::new(agent::python())
            .arg("-c")
            .arg(PTY)
            .arg(flowlens_tests::flowlens::binary())
            .args(flowlens_args(&net.host_if))
            .env("PTY_LOG", &log)
            .env("PTY_KEYS", &key_file)
            .env("FLOWLENS_NO_WEB", "true")
            .env("FLOWLENS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 pty");
        // Cells a redraw leaves blank are skipped with cursor moves: compare
        // without spaces.
        let screen = || {
            strip(&std::fs::read(&log).unwrap_or_default())
                .chars()
                .filter(|c| *c != ' ')
                .collect::<String>()
        };
        let ok = cmd::wait_until(Duration::from_secs(30), || screen().contains("byprocess"));
        assert!(ok, "the live view did not draw:\n{}", screen());
        let id = &c.id[..12];
        let comm = agent::python_comm();
        let t = std::thread::scope(|s| {
            let h = s.spawn(|| traffic(&net, &c));
            let mut last = String::new();
            let seen = cmd::wait_until(Duration::from_secs(30), || {
                last = screen();
                last.contains(&comm) && last.contains(id) && !rates(&last).is_empty()
            });
            h.join().expect("traffic");
            (seen, last)
        });
        assert!(t.0, "no row of {comm} in {id} with a rate:\n{}", t.1);
        // `g` groups by container: the header says so.
        keys(&key_file, "g");
        let grouped = cmd::wait_until(Duration::from_secs(10), || screen().contains("bycontainer"));
        assert!(grouped, "g did not regroup:\n{}", screen());
        keys(&key_file, "q");
        let exited = cmd::wait_until(Duration::from_secs(20), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = child.kill();
        }
        let status = child.wait().expect("wait");
        assert!(
            exited && status.success(),
            "flowlens did not stop on q: {status:?}\n{}",
            screen()
        );
        let raw = std::fs::read(&log).unwrap_or_default();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.contains("\u{1b}[?1049h"),
            "the view used the alternate screen"
        );
        assert!(
            text.contains("\u{1b}[?1049l"),
            "the view left the alternate screen"
        );
        // Logs went into the view, not across it; after it, onto the terminal.
        assert!(!screen().contains("ERROR"), "{}", screen());
    });
}

#[test]
fn without_a_terminal_the_summary_is_plain_text() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let net = VethNetns::new(u);
        let c = FakeContainer::new(u, &net);
        let out = art.path().join("stdout");
        let mut child = Command::new(flowlens_tests::flowlens::binary())
            .args(flowlens_args(&net.host_if))
            .env("FLOWLENS_NO_WEB", "true")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout"))
            .stderr(std::fs::File::create(art.path().join("stderr")).expect("stderr"))
            .spawn()
            .expect("flowlens");
        flowlens_tests::sleep_ms(1500);
        traffic(&net, &c);
        let comm = agent::python_comm();
        let ok = cmd::wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&out).is_ok_and(|s| s.contains(&comm))
        });
        cmd::kill(child.id(), libc::SIGTERM);
        let _ = child.wait();
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(ok, "no {comm} in the summary:\n{text}");
        assert!(
            !text.contains('\u{1b}'),
            "escape sequences on a pipe:\n{text}"
        );
    });
}
