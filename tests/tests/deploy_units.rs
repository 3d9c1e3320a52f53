//! deploy/: the systemd unit and the Kubernetes manifests.
//!
//! - `systemd-analyze verify` accepts the unit without a single warning (an unknown or misspelt key is
//!   only a warning there, so any output fails), and `systemd-analyze security --offline=yes` rates it
//!   "OK". The unit's ExecStart path is pointed at the binary cargo built (verify checks it exists).
//! - The unit's privilege model runs for real: PID 1 is not systemd here, so its sandbox (ProtectSystem=…)
//!   cannot be applied, but its user and capabilities can: flowlens runs as an unprivileged uid (nobody,
//!   standing in for DynamicUser) with exactly the unit's AmbientCapabilities, loads the eBPF programs (no
//!   AF_PACKET fallback) and attributes a TCP conversation between the host and a netns "container".
//! - `kubernetes-validate --strict` (Python, in the venv scripts/test-all.sh makes) accepts the manifests;
//!   the DaemonSet keeps the compose file's capabilities and read-only mounts; flowlens accepts the
//!   ConfigMap's TOML.
//!
//! Needs root. `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test deploy_units -- --test-threads=1`

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flowlens_tests::flowlens::binary;
use flowlens_tests::{
    agent, cmd, repo_root, scenario, sleep_ms, yaml, FakeContainer, Flowlens, Place, TempDir,
    VethNetns, NOBODY,
};
use serde_json::Value;

fn unit_text() -> String {
    std::fs::read_to_string(repo_root().join("deploy/systemd/flowlens.service")).expect("unit file")
}

/// The unit with its ExecStart pointing at the built binary, in a fresh directory.
fn unit_copy(dir: &Path) -> PathBuf {
    let text = unit_text().replace("/usr/local/bin/flowlens", &binary().to_string_lossy());
    let p = dir.join("flowlens.service");
    std::fs::write(&p, text).expect("write unit");
    p
}

#[test]
fn systemd_unit_verifies_cleanly_and_is_hardened() {
    assert!(
        binary().is_file(),
        "cargo build -p flowlens-collector first"
    );
    let dir = TempDir::new("deploy-verify");
    let unit = unit_copy(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let text = cmd::text(&out);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{text}",
        out.status
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for flowlens.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(
        score <= 3.5,
        "exposure {score} (\"OK\" is below 4):\n{text}"
    );
}

fn unit_capabilities() -> Vec<String> {
    let text = unit_text();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities");
    let bounding = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet");
    assert_eq!(line, bounding, "ambient and bounding sets are the same");
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn systemd_unit_user_and_capabilities_run_the_ebpf_pipeline() {
    scenario(|u| {
        let caps = unit_capabilities();
        assert!(unit_text().contains("DynamicUser=yes"));
        let set = caps
            .iter()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect::<Vec<_>>()
            .join(",");
        let net = VethNetns::new(u);
        let ctr = FakeContainer::new(u, &net);
        // Its output directory must be writable by the unprivileged uid.
        let dir = PathBuf::from(format!("/tmp/fl13-unit-{u}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let uid = NOBODY.to_string();
        let (inh, ambient, bounding) = (
            format!("--inh-caps=-all,{set}"),
            format!("--ambient-caps=-all,{set}"),
            format!("--bounding-set=-all,{set}"),
        );
        let setpriv = [
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
            &inh,
            &ambient,
            &bounding,
            "--no-new-privs",
            "--",
        ];
        let fl = Flowlens::start_wrapped(&dir, &[&net.host_if], &[], &[], &setpriv);
        let up = cmd::wait_until(Duration::from_secs(30), || {
            fl.log().contains("flowlens running")
        });
        assert!(
            up,
            "flowlens did not start with the unit's privileges:\n{}",
            fl.log()
        );
        let peer = IpAddr::V4(net.peer_v4);
        let mut srv = agent::tcp_server(Place::In(&ctr), None, peer, 5301, 4_000, 9_000);
        let (mut cli, _) = agent::tcp_client(
            Place::Host,
            Some(NOBODY),
            peer,
            5301,
            4_000,
            9_000,
            0,
            false,
        );
        cli.wait_success();
        srv.wait_success();
        sleep_ms(2_500);
        let (records, text) = fl.stop_with_log();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            !text.contains("falling back to AF_PACKET"),
            "the eBPF programs must load:\n{text}"
        );
        let conv: Vec<&Value> = records
            .iter()
            .filter(|r| r["server"]["port"] == 5301 && r["proto"] == "tcp")
            .collect();
        assert!(!conv.is_empty(), "no record of the conversation:\n{text}");
        let c2s: i64 = conv
            .iter()
            .map(|r| r["bytes_c2s"].as_i64().unwrap_or(0))
            .sum();
        assert!(c2s > 4_000, "client -> server bytes {c2s}");
        for r in &conv {
            assert_eq!(r["client"]["user"], "nobody", "{r}");
            assert_eq!(r["client"]["comm"], agent::python_comm().as_str(), "{r}");
            assert_eq!(r["server"]["container_id"], ctr.id.as_str(), "{r}");
        }
    });
}

// ---------------------------------------------------------------------------------------------------
// Kubernetes

fn kubernetes_validate() -> PathBuf {
    let p = std::env::var_os("FLOWLENS_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/venv-deploy/bin/kubernetes-validate"));
    assert!(
        p.is_file(),
        "{} missing: scripts/test-all.sh installs it (python3 -m venv target/venv-deploy && \
         target/venv-deploy/bin/pip install kubernetes-validate)",
        p.display()
    );
    p
}

/// The manifests as JSON documents (Debian's python3-yaml reads them).
fn manifests() -> Vec<Value> {
    ["configmap.yaml", "daemonset.yaml"]
        .iter()
        .flat_map(|f| {
            let path = repo_root().join("deploy/kubernetes").join(f);
            let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            yaml::documents(&text)
        })
        .collect()
}

#[test]
fn kubernetes_manifests_validate_and_match_the_compose_privileges() {
    let kv = kubernetes_validate();
    let out = Command::new(&kv)
        .arg("--strict")
        .arg(repo_root().join("deploy/kubernetes/configmap.yaml"))
        .arg(repo_root().join("deploy/kubernetes/daemonset.yaml"))
        .output()
        .expect("kubernetes-validate");
    let text = cmd::text(&out);
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    assert_eq!(text.matches(" passed for resource ").count(), 3, "{text}");
    let docs = manifests();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ConfigMap", "Namespace", "DaemonSet"]);
    let ds = &docs[2]["spec"]["template"]["spec"];
    assert_eq!(
        (ds["hostNetwork"].as_bool(), ds["hostPID"].as_bool()),
        (Some(true), Some(true))
    );
    let c = &ds["containers"][0];
    let sc = &c["securityContext"];
    let caps: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .expect("add")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        caps,
        ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "NET_RAW"],
        "as in docker-compose.yml"
    );
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert_eq!(
        (
            sc["privileged"].as_bool(),
            sc["allowPrivilegeEscalation"].as_bool(),
            sc["readOnlyRootFilesystem"].as_bool()
        ),
        (Some(false), Some(false), Some(true))
    );
    for m in c["volumeMounts"].as_array().expect("mounts") {
        let path = m["mountPath"].as_str().unwrap_or("");
        let writable = ["/var/lib/flowlens", "/tmp"].contains(&path);
        assert_eq!(m["readOnly"].as_bool().unwrap_or(false), !writable, "{m}");
    }
    assert!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );
    // flowlens accepts the ConfigMap's file: it gets past the configuration to the interface check.
    let toml = docs[0]["data"]["flowlens.toml"]
        .as_str()
        .expect("flowlens.toml");
    let dir = TempDir::new("deploy-configmap");
    let f = dir.path().join("flowlens.toml");
    // What flowlens says about a config file with `text`.
    let stderr_with = |text: &str| {
        std::fs::write(&f, text).expect("write toml");
        let out = Command::new(binary())
            .args(["run", "--config"])
            .arg(&f)
            .args(["--iface", "flnoiface0"])
            .output()
            .expect("flowlens");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = stderr_with(toml);
    assert!(
        err.contains("unknown interface 'flnoiface0'"),
        "the ConfigMap's TOML must be valid:\n{err}"
    );
    assert!(
        stderr_with(&format!("{toml}\nbogus_key = 1\n")).contains("bogus_key"),
        "a bad key is reported"
    );
}
