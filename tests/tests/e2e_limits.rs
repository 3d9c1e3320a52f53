//! A limit the user set that the kernel refuses is an error naming the
//! limit (not a silent AF_PACKET fallback, which is for kernels that cannot
//! run the programs at all), through the real binary.
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test e2e_limits -- --test-threads=1`

use std::process::{Command, Stdio};
use std::time::Duration;

use flowlens_tests::{cmd, flowlens, scenario, ArtifactDir};

#[test]
fn a_flow_map_the_kernel_refuses_is_an_error_naming_the_limit() {
    scenario(|u| {
        let art = ArtifactDir::new(u);
        let cfg = art.path().join("limits.toml");
        std::fs::write(&cfg, "[limits]\nflow_map_entries = 4294967295\n").expect("config");
        let stderr = art.path().join("flowlens.stderr");
        let mut child = Command::new(flowlens::binary())
            .env("FLOWLENS_NO_WEB", "true")
            .args(["run", "--iface", "lo", "--jsonl", "/dev/null", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr"))
            .spawn()
            .expect("spawn flowlens");
        let mut status = None;
        cmd::wait_until(Duration::from_secs(30), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            cmd::kill(child.id(), libc::SIGTERM);
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(1),
            "a refused limit must stop flowlens with exit 1:\n{log}"
        );
        assert!(
            log.contains("the kernel refused limits.flow_map_entries = 4294967295")
                && log.contains("limits.flow_map_entries = 65536 (the default)"),
            "{log}"
        );
        assert!(
            !log.contains("falling back to AF_PACKET"),
            "no fallback for a refused limit:\n{log}"
        );
    });
}
