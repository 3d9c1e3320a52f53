//! Validation of `flowlens run`'s flags and file.

use super::*;

#[test]
fn flow_slot_defaults_share_a_32_mib_budget() {
    assert_eq!(default_flow_slots_per_cpu(1), 131_072);
    assert_eq!(default_flow_slots_per_cpu(2), 131_072);
    assert_eq!(default_flow_slots_per_cpu(3), 65_536);
    assert_eq!(default_flow_slots_per_cpu(64), 4096);
    assert_eq!(default_flow_slots_per_cpu(1024), 1024);
}

#[test]
fn flow_slots_must_be_a_power_of_two_or_zero() {
    let dir = std::env::temp_dir().join(format!("flowlens-slots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join("slots.toml");
    for (v, ok) in [
        (0u32, true),
        (4, true),
        (1024, true),
        (3, false),
        (2, false),
        (1000, false),
    ] {
        std::fs::write(&p, format!("[limits]\nflow_slots_per_cpu = {v}\n")).expect("write");
        let args = RunArgs {
            config: Some(p.clone()),
            ..Default::default()
        };
        match RunConfig::from_args(&args) {
            Ok(c) => {
                assert!(ok, "{v} accepted");
                assert_eq!(c.flow_slots_per_cpu, v);
            }
            Err(e) => {
                assert!(!ok, "{v} refused: {e}");
                assert!(e.to_string().contains("flow_slots_per_cpu"), "{e}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_rejects_unknown_keys() {
    let dir = std::env::temp_dir().join(format!("flowlens-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join("bad.toml");
    std::fs::write(&p, "export_intervall = \"1s\"\n").expect("write");
    let args = RunArgs {
        config: Some(p.clone()),
        ..Default::default()
    };
    let err = RunConfig::from_args(&args).expect_err("unknown key must fail");
    assert!(err.to_string().contains("export_intervall"), "{err}");
    std::fs::write(
        &p,
        "export_interval = \"2s\"\njsonl = \"-\"\n[limits]\nmax_conversations = 5\n",
    )
    .expect("write");
    let cfg = RunConfig::from_args(&args).expect("valid file");
    assert_eq!(cfg.export_interval, Duration::from_secs(2));
    assert_eq!(cfg.outputs.jsonl, Some(JsonlTarget::Stdout));
    assert_eq!(cfg.max_conversations, 5);
    assert_eq!(cfg.capture, CaptureMode::Ebpf);
    std::fs::write(&p, "capture = \"afpacket\"\n").expect("write");
    let cfg = RunConfig::from_args(&args).expect("valid file");
    assert_eq!(cfg.capture, CaptureMode::Afpacket);
    std::fs::write(&p, "capture = \"pcap\"\n").expect("write");
    assert!(RunConfig::from_args(&args).is_err());
    std::fs::write(
        &p,
        "export_interval = \"2s\"\njsonl = \"-\"\n[limits]\nmax_conversations = 5\n",
    )
    .expect("write");
    // flags win over the file
    let args = RunArgs {
        config: Some(p.clone()),
        export_interval: Some("3s".into()),
        ..Default::default()
    };
    assert_eq!(
        RunConfig::from_args(&args).expect("ok").export_interval,
        Duration::from_secs(3)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_values_are_named() {
    let args = RunArgs {
        export_interval: Some("10q".into()),
        ..Default::default()
    };
    let err = RunConfig::from_args(&args).expect_err("bad unit");
    assert!(err.to_string().contains("export interval"), "{err}");
    let args = RunArgs {
        ifaces: vec!["a/b".into()],
        ..Default::default()
    };
    assert!(RunConfig::from_args(&args).is_err());
}

/// Writes `text` as a config file in a fresh directory and validates it.
fn with_file(name: &str, text: &str) -> Result<RunConfig, ConfigError> {
    let dir = std::env::temp_dir().join(format!("flowlens-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join("flowlens.toml");
    std::fs::write(&p, text).expect("write");
    let r = RunConfig::from_args(&RunArgs {
        config: Some(p),
        ..Default::default()
    });
    let _ = std::fs::remove_dir_all(&dir);
    r
}

#[test]
fn oversized_durations_are_clear_errors() {
    // Each of these panicked in Duration::from_secs_f64 before.
    for (text, what) in [
        (
            "export_interval = \"18446744073709551616\"",
            "export interval",
        ),
        ("idle_timeout = \"18446744073709551615s\"", "idle timeout"),
        ("idle_timeout = \"18446744073.8\"", "idle timeout"),
        (
            "[influx]\nurl = \"http://127.0.0.1:8086\"\nclose_timeout = \"18446744073709551616\"",
            "close_timeout",
        ),
    ] {
        let e = with_file("big", text).expect_err(text).to_string();
        assert!(e.contains(what) && e.contains("too long"), "{text}: {e}");
    }
    for (flag, idle) in [
        (Some("99999999999999999999999"), None),
        (None, Some("99999999999999999999999h")),
    ] {
        let args = RunArgs {
            export_interval: flag.map(str::to_owned),
            idle_timeout: idle.map(str::to_owned),
            ..Default::default()
        };
        let e = RunConfig::from_args(&args)
            .expect_err("too long")
            .to_string();
        assert!(e.contains("9999999999"), "{e}");
    }
}

#[test]
fn durations_with_several_units_and_bare_seconds_in_the_file() {
    let c = with_file("units", "export_interval = \"1m30s\"\nidle_timeout = 120\n").expect("valid");
    assert_eq!(c.export_interval, Duration::from_secs(90));
    assert_eq!(c.idle_timeout, Duration::from_secs(120));
    let c = with_file("frac", "export_interval = 2.5\nidle_timeout = \"30\"\n").expect("valid");
    assert_eq!(c.export_interval, Duration::from_millis(2500));
    assert_eq!(c.idle_timeout, Duration::from_secs(30));
    let args = RunArgs {
        idle_timeout: Some("1m30s".into()),
        ..Default::default()
    };
    assert_eq!(
        RunConfig::from_args(&args).expect("valid").idle_timeout,
        Duration::from_secs(90)
    );
}

#[test]
fn an_empty_host_is_refused() {
    let args = RunArgs {
        host: Some(String::new()),
        ..Default::default()
    };
    let e = RunConfig::from_args(&args)
        .expect_err("empty host")
        .to_string();
    assert!(e.contains("host"), "{e}");
    let e = with_file("host", "host = \" \"\n")
        .expect_err("blank host")
        .to_string();
    assert!(e.contains("host"), "{e}");
}

#[test]
fn a_long_interface_name_is_not_echoed_in_full() {
    let args = RunArgs {
        ifaces: vec!["x".repeat(100_000)],
        ..Default::default()
    };
    let e = RunConfig::from_args(&args)
        .expect_err("too long")
        .to_string();
    assert!(
        e.len() < 300,
        "{} bytes: {}",
        e.len(),
        &e[..300.min(e.len())]
    );
    assert!(e.contains("interface name"), "{e}");
}

#[test]
fn a_missing_config_file_is_named_once() {
    let args = RunArgs {
        config: Some("/nonexistent/flowlens.toml".into()),
        ..Default::default()
    };
    let e = anyhow::Error::from(RunConfig::from_args(&args).expect_err("missing"));
    let text = format!("{e:#}");
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "{text}"
    );
    assert!(text.contains("/nonexistent/flowlens.toml"), "{text}");
}

#[test]
fn interface_patterns_from_flags_and_file() {
    let args = RunArgs {
        iface_include: vec!["veth*".into(), "docker0".into()],
        iface_exclude: vec!["veth9*".into()],
        ..Default::default()
    };
    let cfg = RunConfig::from_args(&args).expect("patterns");
    let sel = cfg.iface_selection();
    assert!(sel.is_auto());
    assert_eq!(sel.include.len(), 2);
    let bad = RunArgs {
        iface_include: vec!["veth[".into()],
        ..Default::default()
    };
    let err = RunConfig::from_args(&bad).expect_err("bad glob");
    assert!(
        err.to_string().contains("iface_include") && err.to_string().contains("'veth['"),
        "{err}"
    );
    let both = RunArgs {
        ifaces: vec!["eth0".into()],
        iface_exclude: vec!["eth*".into()],
        ..Default::default()
    };
    let err = RunConfig::from_args(&both).expect_err("--iface with patterns");
    assert!(err.to_string().contains("use one or the other"), "{err}");
    let dir = std::env::temp_dir().join(format!("flowlens-globs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join("globs.toml");
    std::fs::write(
        &p,
        "iface_include = [\"cali*\"]\niface_exclude = [\"cali0*\"]\n",
    )
    .expect("write");
    let cfg = RunConfig::from_args(&RunArgs {
        config: Some(p),
        ..Default::default()
    })
    .expect("file keys");
    let names: Vec<String> = cfg.iface_include.iter().map(|p| p.to_string()).collect();
    assert_eq!(names, vec!["cali*"]);
    assert_eq!(cfg.iface_exclude.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn signals_are_on_unless_the_flag_or_the_file_turns_them_off() {
    let dir = std::env::temp_dir().join(format!("flowlens-signals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join("signals.toml");
    for (file, flag, want) in [
        ("", false, true),
        ("signals = true\n", false, true),
        ("signals = false\n", false, false),
        ("", true, false),
        ("signals = true\n", true, false),
    ] {
        std::fs::write(&p, file).expect("write");
        let args = RunArgs {
            config: Some(p.clone()),
            no_signals: flag,
            ..Default::default()
        };
        let c = RunConfig::from_args(&args).expect("valid");
        assert_eq!(c.signals, want, "file {file:?}, --no-signals {flag}");
    }
    std::fs::write(&p, "signals = \"no\"\n").expect("write");
    let args = RunArgs {
        config: Some(p.clone()),
        ..Default::default()
    };
    let err = RunConfig::from_args(&args).expect_err("a string is not a bool");
    assert!(err.to_string().contains("signals"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
