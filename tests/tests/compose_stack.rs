//! docker-compose.yml and the flowlens image.
//!
//! - Debian's `docker-compose` accepts the file and its variants, refuses to start without the passwords,
//!   and resolves to what docs/deployment.md promises (ports on 127.0.0.1, named capabilities, host PID and
//!   network namespaces, read-only mounts, healthchecks and healthy dependencies).
//! - The image, in a real Docker engine (a private `dockerd`, as in e2e_docker): no registry is reachable
//!   here, so the upstream images of the stack (influxdb:1.8, grafana/grafana-oss, rust) cannot be pulled
//!   and Grafana cannot run. The base is a local Debian root file system (`debootstrap --variant=minbase`
//!   from the mirror apt uses, cached in target/docker-base) imported as `debian:<codename>-slim`; the
//!   binary is built on the host (the Rust toolchain cannot be pulled as an image either) and packed by the
//!   Dockerfile's `prebuilt` stage, which shares every runtime layer with the default target. The collector
//!   container then runs with exactly the capabilities, namespaces, mounts, user, environment and command
//!   that `docker-compose config` resolves for the `flowlens` service (plus the Docker-socket variant),
//!   writing to a real InfluxDB (Debian's influxd, standing in for the influxdb:1.8 image) with the write
//!   user's credentials; a busybox container serves a host client, and the attributed flows must arrive.
//!   One deviation, said where it happens: `--iface` limits it to this test's own bridge and veth (the
//!   compose file watches every interface, which would touch other tests' interfaces). The web listener is
//!   moved to a free port through `.env`'s `FLOWLENS_LISTEN` (other flowlens processes on this host may
//!   hold 8647) and given a token (`FLOWLENS_WEB_TOKEN`): the healthcheck (`GET /metrics`, which must send
//!   the token) must pass, and `/metrics` must show the InfluxDB output up and records exported.
//!
//! Needs root, docker.io, docker-compose, debootstrap.
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test compose_stack -- --test-threads=1`
//!
//! Length: the file as resolved by docker-compose and the image run with exactly that resolution share
//! the reading of the file (`compose_config`, `volumes`, `run_args`); apart, each would repeat it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use flowlens_tests::docker::{nc_script, Dockerd, IMAGE};
use flowlens_tests::influx::{wait_for, Influxd};
use flowlens_tests::{agent, cmd, flowlens, repo_root, scenario, sleep_ms, yaml, Place, NOBODY};
use serde_json::Value;

/// The web explorer's bearer token in the image run.
const WEB_TOKEN: &str = "web-tok-5772-1566-49";

const SECRETS: [(&str, &str); 4] = [
    ("INFLUX_ADMIN_PASSWORD", "adm-pw-3141"),
    ("INFLUX_WRITE_PASSWORD", "wr-pw-2718"),
    ("INFLUX_READ_PASSWORD", "rd-pw-1618"),
    ("GRAFANA_ADMIN_PASSWORD", "gf-pw-1414"),
];

/// `docker-compose -f <files> config` with `env` (and nothing from the caller's environment that
/// compose reads); the resolved file as JSON.
fn compose_config(files: &[&str], env: &[(&str, &str)]) -> Result<Value, String> {
    let mut c = Command::new("docker-compose");
    c.current_dir(repo_root())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    for f in files {
        c.args(["-f", f]);
    }
    c.arg("config");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c
        .output()
        .expect("docker-compose (apt-get install docker-compose)");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    // Debian's docker-compose depends on python3-yaml: the same parser reads its output.
    let docs = yaml::documents(&out.stdout);
    assert_eq!(docs.len(), 1, "one resolved file");
    Ok(docs.into_iter().next().unwrap_or_default())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// Volume entries as `source:target[:ro]`, from the short syntax (docker-compose 1.x prints it) or the
/// long one (Compose v2, e.g. Debian 13's docker-compose).
fn volumes(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|m| match m {
            Value::String(s) => s.strip_suffix(":rw").unwrap_or(s).to_owned(),
            m => {
                let ro = if m["read_only"] == true { ":ro" } else { "" };
                let (src, dst) = (
                    m["source"].as_str().unwrap_or(""),
                    m["target"].as_str().unwrap_or(""),
                );
                format!("{src}:{dst}{ro}")
            }
        })
        .collect()
}

#[test]
fn compose_file_is_accepted_and_least_privilege() {
    let missing = compose_config(&["docker-compose.yml"], &[]).expect_err("passwords are required");
    assert!(
        missing.contains("INFLUX_ADMIN_PASSWORD") || missing.contains(".env"),
        "{missing}"
    );
    let c = compose_config(&["docker-compose.yml"], &SECRETS).unwrap_or_else(|e| panic!("{e}"));
    let services = c["services"].as_object().expect("services");
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, ["flowlens", "grafana", "influxdb"]);
    for (name, s) in services {
        assert!(
            s["healthcheck"]["test"].is_array(),
            "{name} has a healthcheck"
        );
        for p in s["ports"].as_array().into_iter().flatten() {
            let text = p.to_string();
            assert!(
                text.contains("127.0.0.1"),
                "{name}: port {text} not bound to 127.0.0.1"
            );
        }
        for (dep, cond) in s["depends_on"].as_object().into_iter().flatten() {
            assert_eq!(
                cond["condition"], "service_healthy",
                "{name} waits for {dep} to be healthy"
            );
        }
    }
    let g = &c["services"]["grafana"]["environment"];
    assert_eq!(g["GF_AUTH_ANONYMOUS_ENABLED"], "false");
    assert_eq!(g["GF_SECURITY_ADMIN_PASSWORD"], "gf-pw-1414");
    let f = &c["services"]["flowlens"];
    assert_eq!(f["network_mode"], "host");
    assert_eq!(f["pid"], "host");
    assert_eq!(strings(&f["cap_drop"]), ["ALL"]);
    let caps: BTreeSet<String> = strings(&f["cap_add"]).into_iter().collect();
    let want = ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "NET_RAW"];
    assert_eq!(caps, want.iter().map(|c| c.to_string()).collect());
    assert!(
        f["privileged"].is_null(),
        "privileged only in the fallback variant"
    );
    assert_eq!(strings(&f["security_opt"]), ["no-new-privileges:true"]);
    assert_eq!(f["read_only"], true);
    for v in volumes(&f["volumes"]) {
        let ro = v.ends_with(":ro") || v.starts_with("flowlens-data:");
        assert!(ro, "flowlens mounts {v} writable");
    }
    let cmd = strings(&f["command"]);
    assert_eq!(cmd.first().map(String::as_str), Some("run"));
    assert!(cmd
        .windows(2)
        .any(|w| w[0] == "--influx-url" && w[1] == "http://127.0.0.1:8086"));
    assert!(cmd
        .windows(2)
        .any(|w| w[0] == "--listen" && w[1] == "127.0.0.1:8647"));
    assert_eq!(
        f["environment"]["FLOWLENS_WEB_TOKEN"], "",
        "no explorer token unless .env sets one"
    );
    assert!(
        !c.to_string().contains("docker.sock"),
        "the Docker socket is opt-in"
    );
    // Variants.
    let p = compose_config(
        &["docker-compose.yml", "deploy/compose/privileged.yml"],
        &SECRETS,
    )
    .expect("privileged");
    assert_eq!(p["services"]["flowlens"]["privileged"], true);
    let mut env2 = SECRETS.to_vec();
    env2.extend([
        ("INFLUX_TOKEN", "op-tok"),
        ("INFLUX_WRITE_TOKEN", "w-tok"),
        ("INFLUX_READ_TOKEN", "r-tok"),
    ]);
    let v2 = compose_config(
        &["docker-compose.yml", "deploy/compose/influxdb2.yml"],
        &env2,
    )
    .expect("2.x");
    assert_eq!(
        v2["services"]["flowlens"]["environment"]["INFLUX_TOKEN"],
        "w-tok"
    );
    assert_eq!(
        v2["services"]["flowlens"]["environment"]["INFLUX_PASSWORD"],
        ""
    );
    assert!(v2["services"]["influxdb"]["image"]
        .as_str()
        .is_some_and(|i| i.starts_with("influxdb:2")));
    let mounts = volumes(&v2["services"]["grafana"]["volumes"]).join(" ");
    assert!(
        mounts.contains("datasources-influxdb2:/etc/grafana/provisioning/datasources"),
        "{mounts}"
    );
    let s = compose_config(
        &["docker-compose.yml", "deploy/compose/docker-socket.yml"],
        &SECRETS,
    )
    .expect("socket");
    let vols = volumes(&s["services"]["flowlens"]["volumes"]);
    assert!(
        vols.iter()
            .any(|v| v == "/var/run/docker.sock:/run/docker.sock:ro"),
        "{vols:?}"
    );
    // .env.example names every variable the files read.
    let example = std::fs::read_to_string(repo_root().join(".env.example")).expect(".env.example");
    for f in [
        "docker-compose.yml",
        "deploy/compose/influxdb2.yml",
        "deploy/compose/docker-socket.yml",
    ] {
        let text = std::fs::read_to_string(repo_root().join(f)).expect("compose file");
        for (i, _) in text.match_indices("${") {
            let name: String = text[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                example.contains(&format!("{name}=")),
                "{f} reads {name}, which .env.example does not list"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The image in a real Docker engine

/// `VERSION_CODENAME` of this host and the first archive URI apt uses.
fn host_release() -> (String, String) {
    let os = std::fs::read_to_string("/etc/os-release").expect("os-release");
    let codename = os
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .expect("VERSION_CODENAME")
        .trim_matches('"')
        .to_owned();
    // The archive apt installs this release's main component from.
    let out = cmd::output(
        "apt-get",
        &[
            "indextargets",
            "--format",
            "$(REPO_URI) $(RELEASE) $(COMPONENT) $(TARGET_OF)",
            "Created-By: Packages",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let uri = text.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        (w.len() == 4 && w[1] == codename && w[2] == "main" && w[3] == "deb")
            .then(|| w[0].to_owned())
    });
    (
        codename,
        uri.expect("an apt source of this release's main component (run apt-get update)"),
    )
}

/// A minbase root file system of this host's release as a tar, built once and kept in target/.
fn base_rootfs_tar(codename: &str, mirror: &str) -> PathBuf {
    let dir = repo_root().join("target/docker-base");
    let tar = dir.join(format!("{codename}-minbase.tar"));
    if tar.is_file() {
        return tar;
    }
    assert!(
        cmd::exists("debootstrap"),
        "debootstrap not found (apt-get install debootstrap; scripts/test-all.sh installs it)"
    );
    std::fs::create_dir_all(&dir).expect("mkdir target/docker-base");
    let root = dir.join(format!("{codename}-rootfs.tmp"));
    let _ = std::fs::remove_dir_all(&root);
    let r = root.to_string_lossy().into_owned();
    eprintln!("debootstrap --variant=minbase {codename} from {mirror} (once; ~1-2 min)");
    cmd::run("debootstrap", &["--variant=minbase", codename, &r, mirror]);
    let tmp = dir.join(format!("{codename}-minbase.tar.tmp"));
    let t = tmp.to_string_lossy().into_owned();
    cmd::run("tar", &["-C", &r, "--numeric-owner", "-cf", &t, "."]);
    std::fs::rename(&tmp, &tar).expect("rename tar");
    let _ = std::fs::remove_dir_all(&root);
    tar
}

/// `docker run` arguments for a resolved compose service (the keys the flowlens service uses; any
/// other key is a failure, so the test cannot silently run something else than the file says).
fn run_args(
    svc: &Value,
    name: &str,
    image: &str,
    rename_volume: &dyn Fn(&str) -> String,
) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.into()];
    for (k, v) in svc.as_object().expect("service") {
        match k.as_str() {
            "build" | "image" | "restart" | "depends_on" | "command" => {}
            "network_mode" => a.push(format!("--network={}", v.as_str().expect("network_mode"))),
            "pid" => a.push(format!("--pid={}", v.as_str().expect("pid"))),
            "cap_drop" => a.extend(strings(v).into_iter().map(|c| format!("--cap-drop={c}"))),
            "cap_add" => a.extend(strings(v).into_iter().map(|c| format!("--cap-add={c}"))),
            "security_opt" => a.extend(
                strings(v)
                    .into_iter()
                    .map(|c| format!("--security-opt={c}")),
            ),
            "read_only" => {
                if v == true {
                    a.push("--read-only".into());
                }
            }
            "tmpfs" => a.extend(strings(v).into_iter().map(|t| format!("--tmpfs={t}"))),
            "user" => a.push(format!("--user={}", v.as_str().expect("user"))),
            "environment" => {
                for (ek, ev) in v.as_object().expect("environment") {
                    a.push(format!("--env={ek}={}", ev.as_str().unwrap_or("")));
                }
            }
            "volumes" => a.extend(
                volumes(v)
                    .into_iter()
                    .map(|m| format!("--volume={}", rename_volume(&m))),
            ),
            "healthcheck" => {
                let test = strings(&v["test"]);
                assert_eq!(test.first().map(String::as_str), Some("CMD"), "{test:?}");
                a.push(format!("--health-cmd={}", test[1..].join(" ")));
                for (key, flag) in [
                    ("interval", "--health-interval"),
                    ("timeout", "--health-timeout"),
                    ("start_period", "--health-start-period"),
                ] {
                    if let Some(d) = v[key].as_str() {
                        a.push(format!("{flag}={d}"));
                    }
                }
                if let Some(r) = v["retries"].as_i64() {
                    a.push(format!("--health-retries={r}"));
                }
            }
            other => panic!("the test does not know how to run compose key {other:?}: teach it"),
        }
    }
    a.push(image.into());
    a
}

/// `GET path` on `addr` (HTTP/1.0, the whole answer with its status line), as the healthcheck asks.
fn http_get(addr: &str, path: &str, token: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(c, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").expect("request");
    let mut out = String::new();
    c.read_to_string(&mut out).expect("answer");
    out
}

#[test]
fn collector_image_runs_with_the_compose_privileges_and_writes_attributed_flows() {
    scenario(|u| {
        let d = Dockerd::start(u);
        d.import_busybox(&[
            ("data/s2c", vec![b's'; 3000]),
            ("data/c2s", vec![b'c'; 2000]),
        ]);
        let (codename, mirror) = host_release();
        let tar = base_rootfs_tar(&codename, &mirror);
        let base = format!("debian:{codename}-slim");
        d.cli(&["import", &tar.to_string_lossy(), &base]);
        // The Dockerfile's `prebuilt` stage with the binary `cargo build` made on this host (same release).
        // A build context with what the `prebuilt` stage reads: the repository's Dockerfile and healthcheck,
        // and the binary where FLOWLENS_BINARY's default expects it.
        let ctx = d.root().join("context");
        for (from, to) in [
            (repo_root().join("Dockerfile"), ctx.join("Dockerfile")),
            (
                repo_root().join("deploy/docker/healthcheck.sh"),
                ctx.join("deploy/docker/healthcheck.sh"),
            ),
            (flowlens::binary(), ctx.join("target/release/flowlens")),
        ] {
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir context");
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        }
        let image = format!("flowlens:{u}");
        let build = Command::new("/usr/bin/docker")
            .current_dir(&ctx)
            .env("DOCKER_BUILDKIT", "0")
            .args(["-H", &d.host, "build", "-q", "--target", "prebuilt"])
            .args(["--build-arg", &format!("DEBIAN_RELEASE={codename}")])
            .args(["-t", &image, "."])
            .output()
            .expect("docker build");
        assert!(
            build.status.success(),
            "docker build failed:\n{}",
            String::from_utf8_lossy(&build.stderr)
        );
        let labels = d.cli(&[
            "inspect",
            "-f",
            "{{json .Config.Labels}} {{.Config.User}} {{json .Config.Healthcheck.Test}}",
            &image,
        ]);
        assert!(
            labels.contains("org.opencontainers.image.title") && labels.contains(" flowlens "),
            "{labels}"
        );
        assert!(labels.contains("flowlens-healthcheck"), "{labels}");

        // A real InfluxDB with authentication: flowlens writes as the compose file's write user.
        let influx = Influxd::start_with_auth("admin", "adm-pw-3141");
        influx.exec("CREATE DATABASE flowlens");
        influx.exec("CREATE USER \"flowlens\" WITH PASSWORD 'wr-pw-2718'");
        influx.exec("GRANT WRITE ON \"flowlens\" TO \"flowlens\"");
        let port = influx.port.to_string();
        let sock = d.host.trim_start_matches("unix://").to_owned();
        let listen = format!("127.0.0.1:{}", flowlens_tests::influx::free_port());
        let mut env: Vec<(&str, &str)> = SECRETS.to_vec();
        env.extend([
            ("INFLUX_PORT", port.as_str()),
            ("FLOWLENS_LISTEN", listen.as_str()),
            // With a token, /metrics needs it: the healthcheck must send it.
            ("FLOWLENS_WEB_TOKEN", WEB_TOKEN),
            ("FLOWLENS_EXPORT_INTERVAL", "1s"),
            ("DOCKER_SOCKET", sock.as_str()),
        ]);
        // Debian 12's Docker (20.10) does not know the capability names BPF and PERFMON: the documented
        // substitute (.env.example) is SYS_ADMIN for both.
        let version = d.cli(&["version", "--format", "{{.Server.Version}}"]);
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 23 {
            eprintln!("note: Docker {version} < 23: FLOWLENS_CAP_BPF=SYS_ADMIN, FLOWLENS_CAP_PERFMON=CAP_SYS_ADMIN, as .env.example says");
            env.extend([
                ("FLOWLENS_CAP_BPF", "SYS_ADMIN"),
                ("FLOWLENS_CAP_PERFMON", "CAP_SYS_ADMIN"),
            ]);
        }
        let caps: &[&str] = if major < 23 {
            &["SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "NET_RAW"]
        } else {
            &["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "NET_RAW"]
        };
        let c = compose_config(
            &["docker-compose.yml", "deploy/compose/docker-socket.yml"],
            &env,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let svc = &c["services"]["flowlens"];

        // The workload: a busybox server container and a client on the host, as nobody.
        let srv = d.run(&format!("{u}-web"), &nc_script("-l -p 5000", "s2c", false));
        let vol = format!("{u}-data");
        let name = format!("{u}-flowlens");
        let mut args = run_args(svc, &name, &image, &|m: &str| {
            m.replace("flowlens-data:", &format!("{vol}:"))
        });
        let mut command = strings(&svc["command"]);
        assert!(
            command
                .windows(2)
                .any(|w| w[0] == "--listen" && w[1] == listen),
            "FLOWLENS_LISTEN reaches --listen: {command:?}"
        );
        // Only this test's interfaces (see the module comment).
        command.extend([
            "--iface".into(),
            d.bridge.clone(),
            "--iface".into(),
            srv.host_veth.clone(),
        ]);
        args.extend(command);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = d.cli(&refs);
        let logs = || {
            cmd::text(&cmd::output(
                "/usr/bin/docker",
                &["-H", &d.host, "logs", &name],
            ))
        };
        let running = wait_for(Duration::from_secs(60), || {
            logs().contains("flowlens running")
        });
        assert!(
            running,
            "the collector container did not start ({id}):\n{}",
            logs()
        );
        let inspect = d.cli(&["inspect", "-f", "{{json .HostConfig.CapAdd}} {{.HostConfig.CapDrop}} {{.HostConfig.Privileged}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.PidMode}} {{.HostConfig.NetworkMode}} {{.Config.User}}", &name]);
        let (cap_add, rest) = inspect.split_once(' ').expect("inspect");
        let cap_add: BTreeSet<String> = serde_json::from_str::<Vec<String>>(cap_add)
            .expect("CapAdd")
            .into_iter()
            .map(|c| c.trim_start_matches("CAP_").to_owned())
            .collect();
        assert_eq!(
            cap_add,
            caps.iter().map(|c| c.to_string()).collect(),
            "{inspect}"
        );
        assert_eq!(rest, "[ALL] false true host host 0:0", "{inspect}");

        let ip = IpAddr::V4(srv.ip);
        let (mut cli, _) =
            agent::tcp_client(Place::Host, Some(NOBODY), ip, 5000, 2000, 3000, 0, true);
        cli.expect_line("RECEIVED");
        d.wait_received(&srv.name, 2000);
        sleep_ms(3_000);
        cli.send_line("done");
        let q = |s: &str| influx.rows("flowlens", s);
        let mut rows = Vec::new();
        let arrived = wait_for(Duration::from_secs(30), || {
            rows = q(&format!("SELECT * FROM \"flow\" WHERE \"server_port\" = '5000' AND \"server_container_name\" = '{}'", srv.name));
            rows.iter()
                .map(|r| r["bytes_c2s"].as_i64().unwrap_or(0))
                .sum::<i64>()
                > 2000
        });
        let log = logs();
        assert!(
            arrived,
            "no attributed flow of the container in InfluxDB:\n{rows:?}\n{log}"
        );
        let r = &rows[0];
        let want: BTreeMap<&str, Value> = BTreeMap::from([
            ("client_user", Value::from("nobody")),
            ("client_comm", Value::from(agent::python_comm())),
            ("client_container_name", Value::from("host")),
            ("server_comm", Value::from("nc")),
            ("server_container_id", Value::from(srv.id.clone())),
            ("server_container_image", Value::from(IMAGE)),
            ("server_user", Value::from("root")),
        ]);
        for (k, v) in &want {
            assert_eq!(r.get(*k), Some(v), "{k} in {r:?}");
        }
        let payload: i64 = rows
            .iter()
            .map(|r| r["bytes_s2c"].as_i64().unwrap_or(0))
            .sum();
        assert!(payload > 3000, "server -> client bytes {payload}");
        let rollup = q(&format!("SELECT sum(\"bytes\") FROM \"flow_rollup\" WHERE \"container\" = '{}' AND \"comm\" = 'nc' GROUP BY \"username\"", srv.name));
        assert!(!rollup.is_empty(), "rollup of the container");
        let losses = q("SELECT sum(\"lost\") FROM \"flowlens_self\" GROUP BY \"reason\"");
        assert!(losses.len() >= 10, "the loss counters arrive: {losses:?}");
        assert!(!log.contains("wr-pw-2718"), "password in the log");
        let healthy = wait_for(Duration::from_secs(90), || {
            d.cli(&["inspect", "-f", "{{.State.Health.Status}}", &name]) == "healthy"
        });
        assert!(
            healthy,
            "the container's healthcheck never passed:\n{}\n{}",
            d.cli(&["inspect", "-f", "{{json .State.Health}}", &name]),
            logs()
        );
        // What the healthcheck reads, from the host (host network): the output is up and records left.
        let refused = http_get(&listen, "/metrics", None);
        assert!(refused.starts_with("HTTP/1.0 401 "), "{refused}");
        let metrics = http_get(&listen, "/metrics", Some(WEB_TOKEN));
        assert!(metrics.starts_with("HTTP/1.0 200 "), "{metrics}");
        assert!(!logs().contains(WEB_TOKEN), "explorer token in the log");
        assert!(
            metrics.contains("\nflowlens_sink_up{sink=\"influxdb\"} 1\n"),
            "{metrics}"
        );
        let exported = metrics
            .lines()
            .find_map(|l| l.strip_prefix("flowlens_records_exported "))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(exported.is_some_and(|n| n >= 1.0), "{metrics}");
        // SIGTERM (docker stop) flushes and detaches.
        d.cli(&["stop", "-t", "20", &name]);
        let code = d.cli(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
        assert_eq!(
            code,
            "0",
            "flowlens exit code in the container:\n{}",
            logs()
        );
        let _ = d.cli(&["rm", &name]);
        let _ = d.cli(&["volume", "rm", &vol]);
    });
}
