//! Harness for the end-to-end tests (a library: each test binary links what
//! it uses): namespaces, fake and real containers,
//! traffic generators, tcpdump as the reference, the flowlens process, and
//! checks of its JSON lines. Every resource is an RAII guard that cleans up on
//! drop, also when a test panics; names carry a per-scenario prefix
//! ([`Uniq`]) so [`leftovers::assert_no_leftovers`] can prove it.
//!
//! Needs root and: iproute2, ethtool, tcpdump, python3, util-linux (setpriv),
//! socat, iputils-ping, dnsmasq-base, iptables, busybox-static, docker.io (dockerd) for `e2e_docker`
//! and `compose_stack`; python3-yaml for the compose and Kubernetes files.

pub mod agent;
pub mod artifacts;
pub mod browser;
pub mod capture;
pub mod cgroup;
pub mod checks;
pub mod cmd;
pub mod docker;
pub mod flowlens;
pub mod grafana;
pub mod influx;
pub mod leftovers;
pub mod names;
pub mod netns;
pub mod pcap;
pub mod records;
pub mod relay;
pub mod router;
pub mod signals;
pub mod spawn;
pub mod yaml;

pub use artifacts::{ArtifactDir, TempDir};
pub use capture::Tcpdump;
pub use cgroup::FakeContainer;
pub use checks::{Checks, ExpectedContainer, ExpectedEndpoint};
pub use flowlens::Flowlens;
pub use names::Uniq;
pub use netns::VethNetns;
pub use records::Side;
pub use spawn::{Place, Proc, ProcIdentity, NOBODY};

/// IP protocol numbers.
pub use flowlens_correlator::types::proto as ipproto;

thread_local! {
    static DEFERRED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records a failure to be reported when the current [`scenario`] ends, so
/// the checks that follow still run.
pub fn defer_failure(msg: String) {
    eprintln!("deferred failure: {msg}");
    DEFERRED.with(|d| d.borrow_mut().push(msg));
}

/// Runs one scenario with a fresh [`Uniq`], then (also if it panicked, after
/// its guards dropped) asserts nothing named after it is left and no
/// [`defer_failure`] was recorded; re-raises the scenario's panic first.
pub fn scenario(body: impl FnOnce(&Uniq)) {
    assert_root();
    let uniq = Uniq::new();
    DEFERRED.with(|d| d.borrow_mut().clear());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&uniq)));
    let left = leftovers::leftovers(&uniq);
    let deferred = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
    if let Err(panic) = result {
        if !left.is_empty() || !deferred.is_empty() {
            eprintln!("scenario {uniq} also: left behind {left:?}; deferred failures {deferred:?}");
        }
        std::panic::resume_unwind(panic);
    }
    assert!(
        deferred.is_empty(),
        "scenario {uniq}:\n  {}",
        deferred.join("\n  ")
    );
    assert!(
        left.is_empty(),
        "scenario {uniq} left things behind:\n  {}",
        left.join("\n  ")
    );
}

/// These tests need root (namespaces, cgroups, BPF): fail clearly otherwise.
pub fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the end-to-end tests must run as root");
}

/// `target/tmp` (what cargo calls `CARGO_TARGET_TMPDIR` for integration
/// tests): from the test binary's path, `target/<profile>/deps/<test>`.
pub fn target_tmpdir() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("tmp")))
        .unwrap_or_else(|| std::env::temp_dir().join("flowlens-tests"))
}

/// The workspace's root directory (where `Cargo.toml`, `grafana/`, `deploy/`
/// and `docs/` are).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the workspace")
        .to_path_buf()
}

/// Sleeps for `ms` milliseconds (× `cmd::time_scale`).
pub fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms) * cmd::time_scale());
}
