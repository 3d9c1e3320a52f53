//! The binary as an operator meets it: `doctor`, clear errors for bad input,
//! attaching by itself to interfaces that appear later, and leaving nothing
//! attached after SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;

use flowlens_tests::{cmd, flowlens, records, ArtifactDir, Flowlens, VethNetns};

fn flowlens_cmd(args: &[&str], as_nobody: bool) -> (i32, String) {
    let bin = flowlens::binary();
    let out = if as_nobody {
        let mut a: Vec<String> = ["--reuid", "65534", "--regid", "65534", "--clear-groups"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(bin.to_string_lossy().into_owned());
        a.extend(args.iter().map(|s| s.to_string()));
        Command::new("setpriv")
            .args(&a)
            .env("FLOWLENS_NO_WEB", "true")
            .output()
    } else {
        Command::new(&bin)
            .args(args)
            .env("FLOWLENS_NO_WEB", "true")
            .output()
    }
    .expect("run flowlens");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn doctor_passes_as_root_and_names_what_is_missing_otherwise() {
    flowlens_tests::assert_root();
    let (code, out) = flowlens_cmd(&["doctor"], false);
    assert_eq!(code, 0, "doctor as root:\n{out}");
    for hook in [
        "kernel BTF",
        "XDP and TC flow programs load",
        "socket and process hooks",
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains("[     ok]") && l.contains(hook)),
            "doctor should report {hook} as ok:\n{out}"
        );
    }
    let empty: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_end().ends_with(':'))
        .collect();
    assert!(
        empty.is_empty(),
        "doctor lines with empty details: {empty:?}"
    );
    let (code, out) = flowlens_cmd(&["doctor"], true);
    assert_eq!(code, 1, "doctor without privileges must fail:\n{out}");
    assert!(
        out.contains("[MISSING] privileges") && out.contains("missing: privileges"),
        "doctor must name the missing privileges:\n{out}"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_nonzero_exit() {
    flowlens_tests::assert_root();
    let cases: [(&[&str], bool, &str); 4] = [
        (
            &["run", "--iface", "nosuchif0"],
            false,
            "unknown interface 'nosuchif0'",
        ),
        (
            &["run", "--export-interval", "5q"],
            false,
            "invalid export interval",
        ),
        (
            &["run"],
            true,
            "flowlens run needs root or the capabilities",
        ),
        (
            &["run", "--iface", "a/b"],
            false,
            "not a valid interface name",
        ),
    ];
    for (args, nobody, expected) in cases {
        let (code, out) = flowlens_cmd(args, nobody);
        assert_eq!(code, 1, "flowlens {args:?} must exit 1:\n{out}");
        assert!(
            out.contains(expected),
            "flowlens {args:?}: expected {expected:?} in:\n{out}"
        );
    }
    let dir = std::env::temp_dir().join(format!("flowlens-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "export_interval = \"1s\"\nintervall = 3\n").expect("write");
    let (code, out) = flowlens_cmd(&["run", "--config", cfg.to_str().expect("utf8")], false);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid config file") && out.contains("intervall"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without --iface flowlens monitors every interface, including one created
/// after it started; on SIGTERM nothing stays attached anywhere.
#[test]
fn attaches_to_new_interfaces_and_detaches_everything_on_sigterm() {
    flowlens_tests::scenario(|uniq| {
        let art = ArtifactDir::new(uniq);
        let fl = Flowlens::start(art.path(), &[], &[]);
        // The interface appears after start-up.
        let net = VethNetns::new(uniq);
        let attached = cmd::wait_until(std::time::Duration::from_secs(5), || {
            fl.log().contains(&format!("iface={}", net.host_if))
        });
        assert!(
            attached,
            "flowlens did not attach to the new {}:\n{}",
            net.host_if,
            fl.log()
        );
        // TCX links are invisible to `bpftool net` 7.1; the loaded programs are not.
        let progs = fl.programs();
        assert!(
            progs.iter().any(|p| p == "flowlens_tc_ingress")
                && progs.iter().any(|p| p == "flowlens_tc"),
            "flowlens TC programs not loaded: {progs:?}"
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
                "-W",
                "1",
                &net.host_v4.to_string(),
            ],
        );
        assert!(ping.status.success(), "ping failed: {ping:?}");
        flowlens_tests::sleep_ms(1500);
        let host_if = net.host_if.clone();
        let lines = fl.stop();
        assert!(
            flowlens::attached_programs(&host_if).is_empty(),
            "programs left attached to {host_if}"
        );
        for dev in ["lo", "eth0"] {
            assert!(
                flowlens::attached_programs(dev).is_empty(),
                "programs left attached to {dev}"
            );
        }
        let convs = records::conversations(&lines);
        let icmp: Vec<_> = convs
            .values()
            .filter(|c| {
                c.proto == "icmp"
                    && c.client.map(|a| a.ip()) == Some(IpAddr::V4(net.peer_v4))
                    && c.server.map(|a| a.ip()) == Some(IpAddr::V4(net.host_v4))
            })
            .collect();
        assert_eq!(
            icmp.len(),
            1,
            "one ping conversation expected:\n{}",
            records::summary(&convs)
        );
        let c = icmp[0];
        assert_eq!((c.packets_c2s, c.packets_s2c), (3, 3), "{}", c.describe());
        // 20 IP + 8 ICMP + 56 data.
        assert_eq!(
            (c.bytes_c2s, c.bytes_s2c),
            (3 * 84, 3 * 84),
            "{}",
            c.describe()
        );
        assert!(
            c.ifaces.contains(&host_if),
            "ifaces {:?} should contain {host_if}",
            c.ifaces
        );
        let client: SocketAddr = c.client.expect("client");
        assert_eq!(
            client.port(),
            c.server.expect("server").port(),
            "echo id on both ends"
        );
        // Every attachment holds its program: none may outlive the process
        // (Flowlens::stop checked the ids this process loaded are gone).
        drop(net);
    });
}

/// With no output configured, `flowlens run` prints a readable summary of the
/// top conversations each interval, naming their processes and containers.
#[test]
fn summary_on_stdout_without_outputs() {
    use flowlens_tests::{agent, FakeContainer, Place};
    flowlens_tests::scenario(|uniq| {
        let art = ArtifactDir::new(uniq);
        let net = VethNetns::new(uniq);
        let container = FakeContainer::new(uniq, &net);
        let out_path = art.path().join("summary.out");
        let out = std::fs::File::create(&out_path).expect("summary file");
        let err = std::fs::File::create(art.path().join("summary.err")).expect("err file");
        let mut child = Command::new(flowlens::binary())
            .args(["run", "--iface", &net.host_if, "--export-interval", "1s"])
            .env("FLOWLENS_NO_WEB", "true")
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn flowlens");
        let ready = cmd::wait_until(std::time::Duration::from_secs(10), || {
            std::fs::read_to_string(art.path().join("summary.err"))
                .unwrap_or_default()
                .contains("flowlens running")
        });
        assert!(ready, "flowlens did not start");
        let host = IpAddr::V4(net.host_v4);
        let mut server = agent::tcp_server(Place::Host, None, host, 18443, 3000, 70000);
        let (mut client, lport) = agent::tcp_client(
            Place::In(&container),
            Some(flowlens_tests::NOBODY),
            host,
            18443,
            3000,
            70000,
            0,
            false,
        );
        client.wait_success();
        server.wait_success();
        flowlens_tests::sleep_ms(1500);
        cmd::kill(child.id(), libc::SIGTERM);
        let status = child.wait().expect("wait flowlens");
        assert!(status.success(), "flowlens exit {status:?}");
        let text = std::fs::read_to_string(&out_path).expect("summary");
        assert!(
            text.contains("CLIENT PROCESS") && text.contains("SERVER PROCESS"),
            "no table header:\n{text}"
        );
        let row = text
            .lines()
            .find(|l| {
                l.contains(&format!("{}:18443", net.host_v4))
                    && l.contains(&format!("{}:{lport}", net.peer_v4))
            })
            .unwrap_or_else(|| panic!("no row for the conversation:\n{text}"));
        let comm = agent::python_comm();
        assert!(row.starts_with("tcp"), "{row}");
        assert!(
            row.contains(&format!("nobody/{comm}[")),
            "client process (nobody) missing: {row}"
        );
        assert!(
            row.contains(&format!("root/{comm}[")),
            "server process (root) missing: {row}"
        );
        assert!(row.contains("@docker:"), "client container missing: {row}");
        assert!(
            row.contains("68.") || row.contains("KiB"),
            "bytes missing: {row}"
        );
    });
}
