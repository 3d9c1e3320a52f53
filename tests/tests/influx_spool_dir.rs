//! The InfluxDB spool owns a directory of its own, through the real binary:
//! `spool_dir = "/"` is refused (nothing written there), a directory of
//! other files and a foreign file named `index` are refused and left
//! untouched, a new directory is created and marked.
//! `cargo build -p flowlens-collector && cargo test -p flowlens-tests --test influx_spool_dir -- --test-threads=1`

use std::path::Path;
use std::process::Command;

use flowlens_tests::flowlens;
use flowlens_tests::influx::{free_port, FlowlensRun, TempDir};

/// `flowlens run --iface lo` with the InfluxDB output at a closed port (the
/// spool is opened before anything is loaded) and `extra` flags; its exit
/// code and stderr.
fn run(extra: &[&str]) -> (Option<i32>, String) {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = Command::new(flowlens::binary())
        .env("FLOWLENS_NO_WEB", "true")
        .args([
            "run",
            "--iface",
            "lo",
            "--jsonl",
            "/dev/null",
            "--influx-url",
            &url,
        ])
        .args(extra)
        .env("FLOWLENS_EXPORT_INTERVAL", "1s")
        .output()
        .expect("run flowlens");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn the_spool_owns_its_directory() {
    flowlens_tests::assert_root();
    let dir = TempDir::new("spool-dir");
    // "/" (here through the config file): refused before anything is written.
    assert!(
        !Path::new("/lock").exists() && !Path::new("/index").exists(),
        "HARNESS: /lock or /index exists already"
    );
    let cfg = dir.path().join("root.toml");
    std::fs::write(&cfg, "[influx]\nspool_dir = \"/\"\n").expect("config");
    let (code, err) = run(&["--config", path(&cfg)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("spool directory \"/\"") || err.contains("spool directory /"),
        "{err}"
    );
    assert!(err.contains("root directory"), "{err}");
    for f in ["/lock", "/index", "/.flowlens-spool"] {
        assert!(!Path::new(f).exists(), "{f} was written");
    }
    // Someone else's directory, with a file named `index`: refused, untouched.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).expect("mkdir");
    std::fs::write(foreign.join("index"), "precious\n").expect("index");
    std::fs::write(foreign.join("notes.txt"), "mine\n").expect("notes");
    let (code, err) = run(&["--influx-spool-dir", path(&foreign)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("notes.txt") && err.contains("index (not a flowlens spool index)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(foreign.join("index")).expect("index"),
        "precious\n"
    );
    let mut names: Vec<String> = std::fs::read_dir(&foreign)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["index", "notes.txt"], "nothing added");
    // A new directory: created, locked and marked as the spool's.
    let fresh = dir.path().join("a").join("spool");
    let url = format!("http://127.0.0.1:{}", free_port());
    let extra: Vec<String> = ["--influx-url", &url, "--influx-spool-dir", path(&fresh)]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let fl = FlowlensRun::start(dir.path(), "lo", &extra, &[], "fresh");
    let mut names: Vec<String> = std::fs::read_dir(&fresh)
        .expect("created")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![".flowlens-spool", "lock"], "{}", fl.log());
    // A second collector on the same directory: refused.
    let (code, err) = run(&["--influx-spool-dir", path(&fresh)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("in use by another flowlens process"), "{err}");
    fl.stop();
}
