//! Proof that a scenario cleaned up after itself.

use std::path::Path;

use super::cgroup::cgroup2_root;
use super::cmd;
use super::docker::{mounts_below, pids_mentioning};
use super::names::Uniq;

/// Everything named after `uniq` that still exists, as readable lines.
pub fn leftovers(uniq: &Uniq) -> Vec<String> {
    let u = uniq.as_str();
    let mut found = Vec::new();
    let netns = cmd::run("ip", &["netns", "list"]);
    found.extend(
        netns
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(u))
            .map(|l| format!("netns {l}")),
    );
    let links = cmd::run("ip", &["-o", "link", "show"]);
    found.extend(
        links
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .filter(|name| name.split('@').next().is_some_and(|n| n.starts_with(u)))
            .map(|name| format!("link {name}")),
    );
    // Attachments of kernel programs to our devices (gone with them, unless a
    // device survived).
    if cmd::exists("bpftool") {
        let net = cmd::output("bpftool", &["net", "show"]);
        found.extend(
            String::from_utf8_lossy(&net.stdout)
                .lines()
                .filter(|l| l.contains(u))
                .map(|l| format!("bpftool net: {l}")),
        );
    }
    let cg = format!("{}/flowlens-test-{u}", cgroup2_root());
    if Path::new(&cg).exists() {
        found.push(format!("cgroup {cg}"));
    }
    let docker_root = format!("/tmp/fld-{u}");
    if Path::new(&docker_root).exists() {
        found.push(format!("directory {docker_root}"));
    }
    found.extend(
        mounts_below(Path::new(&docker_root))
            .into_iter()
            .map(|m| format!("mount {m}")),
    );
    for needle in [docker_root.as_str(), &format!("/run/netns/{u} ")] {
        found.extend(
            pids_mentioning(needle)
                .into_iter()
                .map(|p| format!("process {p} ({needle})")),
        );
    }
    found
}

/// Panics listing whatever `uniq`'s scenario left behind.
pub fn assert_no_leftovers(uniq: &Uniq) {
    let left = leftovers(uniq);
    assert!(
        left.is_empty(),
        "scenario {uniq} left things behind:\n  {}",
        left.join("\n  ")
    );
}
