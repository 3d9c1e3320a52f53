//! YAML files (compose, Kubernetes) as JSON, read by Debian's python3-yaml:
//! the parser docker-compose itself uses, so the tests read what it reads.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Every document of `yaml`, in order.
pub fn documents(yaml: &[u8]) -> Vec<Value> {
    let mut py = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json,sys,yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (apt-get install python3-yaml)");
    py.stdin
        .take()
        .expect("stdin")
        .write_all(yaml)
        .expect("write the YAML to python3");
    let out = py.wait_with_output().expect("python3 yaml");
    assert!(
        out.status.success(),
        "python3-yaml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python3 writes JSON")
}
