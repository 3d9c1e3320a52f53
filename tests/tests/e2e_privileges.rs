//! The README's capability route, tested as it is meant: a copy of the
//! binary with exactly the README's file capabilities, run by `nobody`
//! (uid 65534). `doctor` passes and `run` counts in eBPF mode; without
//! `cap_dac_read_search` (tracefs root-only, mode 0700) both name what is
//! missing instead of calling tracefs "not mounted" or falling back.
//! Needs root (setcap) and libcap2-bin:
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test e2e_privileges -- --test-threads=1`

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use flowlens_tests::{cmd, flowlens, records, scenario, sleep_ms, Flowlens, Uniq, VethNetns};

/// The README's list.
const README_CAPS: &str = "cap_bpf,cap_perfmon,cap_net_admin,cap_sys_ptrace,cap_dac_read_search+ep";
/// The list the README had before: no cap_dac_read_search.
const OLD_CAPS: &str = "cap_bpf,cap_perfmon,cap_net_admin,cap_sys_ptrace+ep";

/// Runs as nobody (no groups): `setpriv` then the program.
const AS_NOBODY: [&str; 6] = [
    "setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
];

/// A directory nobody can reach, read and write: under the system's
/// temporary directory, as the checkout (and its `target/tmp`) may sit under
/// a home directory only root can enter. Removed on drop.
struct NobodyDir(PathBuf);

impl NobodyDir {
    fn new(u: &Uniq) -> Self {
        let path = std::env::temp_dir().join(format!("flowlens-privileges-{u}"));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the directory");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for NobodyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A copy of the binary in `dir` (which nobody can read and write) with
/// `caps` as file capabilities.
fn capable_copy(dir: &Path, caps: &str) -> PathBuf {
    let bin = dir.join("flowlens-caps");
    let _ = std::fs::remove_file(&bin);
    std::fs::copy(flowlens::binary(), &bin).expect("copy the binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod bin");
    cmd::run("setcap", &[caps, bin.to_str().expect("utf-8")]);
    let got = cmd::run("getcap", &[bin.to_str().expect("utf-8")]);
    assert!(
        got.contains("cap_bpf"),
        "HARNESS: setcap did not take: {got}"
    );
    bin
}

/// `bin args` as nobody: exit code and stdout + stderr.
fn as_nobody(bin: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(AS_NOBODY[0])
        .env("FLOWLENS_NO_WEB", "true")
        .args(&AS_NOBODY[1..])
        .arg(bin)
        .args(args)
        .output()
        .expect("setpriv");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The tracefs this machine has must be root-only for the second half to
/// mean anything.
fn tracefs_is_root_only() -> bool {
    let out = Command::new(AS_NOBODY[0])
        .args(&AS_NOBODY[1..])
        .args(["ls", "/sys/kernel/tracing/events"])
        .output()
        .expect("setpriv ls");
    !out.status.success()
}

#[test]
fn the_readme_capabilities_are_all_a_non_root_user_needs() {
    scenario(|u| {
        let art = NobodyDir::new(u);
        let bin = capable_copy(art.path(), README_CAPS);
        let (code, out) = as_nobody(&bin, &["doctor"]);
        assert_eq!(
            code,
            Some(0),
            "doctor as nobody with the README's capabilities:\n{out}"
        );
        // `run`, as nobody, in eBPF mode, counting a real conversation.
        let net = VethNetns::new(u);
        let wrapper: Vec<String> = AS_NOBODY
            .iter()
            .map(|s| s.to_string())
            .chain([
                "sh".into(),
                "-c".into(),
                format!("shift; exec {} \"$@\"", bin.display()),
                "sh".into(),
            ])
            .collect();
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let fl = Flowlens::start_wrapped(art.path(), &[&net.host_if], &[], &[], &wrapper);
        let log = fl.log();
        assert!(
            log.contains("capture=\"ebpf\"") && !log.contains("falling back"),
            "eBPF mode expected:\n{log}"
        );
        let ping = cmd::output(
            "ip",
            &[
                "netns",
                "exec",
                &net.ns,
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                &net.host_v4.to_string(),
            ],
        );
        assert!(ping.status.success(), "HARNESS: ping");
        sleep_ms(1500);
        let recs = fl.stop();
        let convs = records::conversations(&recs);
        let echo = convs.values().find(|c| {
            c.proto == "icmp" && c.client.map(|a| a.ip()) == Some(IpAddr::V4(net.peer_v4))
        });
        let echo = echo.unwrap_or_else(|| panic!("no ping counted:\n{}", records::summary(&convs)));
        assert_eq!(
            (echo.packets_c2s, echo.packets_s2c),
            (3, 3),
            "{}",
            echo.describe()
        );
    });
}

#[test]
fn without_dac_read_search_doctor_and_run_name_it() {
    scenario(|u| {
        if !tracefs_is_root_only() {
            eprintln!("tracefs is readable by nobody here: CAP_DAC_READ_SEARCH is not needed; nothing to check");
            return;
        }
        let art = NobodyDir::new(u);
        let bin = capable_copy(art.path(), OLD_CAPS);
        let (code, out) = as_nobody(&bin, &["doctor"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains("[MISSING] privileges: missing CAP_DAC_READ_SEARCH")
                && out.contains("cap_dac_read_search+ep"),
            "doctor must name the capability:\n{out}"
        );
        assert!(
            !out.contains("not mounted"),
            "tracefs is mounted (root-only), doctor must not say otherwise:\n{out}"
        );
        let jsonl = art.path().join("never.jsonl");
        let (code, out) = as_nobody(
            &bin,
            &[
                "run",
                "--iface",
                "lo",
                "--jsonl",
                jsonl.to_str().expect("utf-8"),
            ],
        );
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains("missing CAP_DAC_READ_SEARCH")
                && out.contains("tracefs")
                && !out.contains("AF_PACKET"),
            "run must name the capability (no AF_PACKET fallback without CAP_NET_RAW):\n{out}"
        );
    });
}
