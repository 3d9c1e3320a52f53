//! A "container" without a container runtime: a network namespace plus a
//! cgroup v2 directory named the way Docker's systemd cgroup driver names its
//! scopes, so the collector's cgroup-path parser recognizes it.

use std::path::PathBuf;
use std::time::Duration;

use super::cmd;
use super::names::{random_hex64, Uniq};
use super::netns::VethNetns;

/// Where the v2 hierarchy is mounted: `/sys/fs/cgroup/unified` on this
/// (hybrid) machine, `/sys/fs/cgroup` in the kernel-matrix guests (unified).
pub fn cgroup2_root() -> String {
    flowlens_collector::enrich::cgroup2_mount()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/sys/fs/cgroup/unified".to_string())
}

/// `<cgroup v2 root>/flowlens-test-<uniq>/docker-<64 hex>.scope`, used
/// together with a [`VethNetns`]. Dropping it kills every process in the cgroup
/// and removes both directories.
#[derive(Debug)]
pub struct FakeContainer {
    /// The 64-hex "container id".
    pub id: String,
    /// cgroup path relative to the v2 root, as in `/proc/<pid>/cgroup` (`0::...`).
    pub cgroup: String,
    /// The namespace processes run in.
    pub ns: String,
    dir: PathBuf,
    parent: PathBuf,
}

impl FakeContainer {
    /// Creates the cgroup directories for processes to be run in `net`'s namespace.
    pub fn new(uniq: &Uniq, net: &VethNetns) -> Self {
        Self::in_netns(uniq, &net.ns)
    }

    /// Creates the cgroup directories for processes to be run in namespace `ns`.
    pub fn in_netns(uniq: &Uniq, ns: &str) -> Self {
        let id = random_hex64();
        let parent_rel = format!("/flowlens-test-{uniq}");
        let cgroup = format!("{parent_rel}/docker-{id}.scope");
        let root = cgroup2_root();
        let guard = FakeContainer {
            dir: PathBuf::from(format!("{root}{cgroup}")),
            parent: PathBuf::from(format!("{root}{parent_rel}")),
            id,
            cgroup,
            ns: ns.to_owned(),
        };
        std::fs::create_dir_all(&guard.dir)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", guard.dir.display()));
        guard
    }

    /// Absolute path of the cgroup directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// argv that runs `argv` inside the cgroup and the namespace: a shell
    /// joins the cgroup, then `exec`s nsenter, which `exec`s the command, so
    /// the pid stays the same all the way down. (Not `ip netns exec`: it
    /// mounts a fresh /sys, without the cgroup file systems.)
    pub fn wrap(&self, argv: &[String]) -> Vec<String> {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec nsenter --net=/run/netns/{} -- \"$@\"",
            self.dir.display(),
            self.ns
        );
        let mut out: Vec<String> = vec!["/bin/sh".into(), "-c".into(), script, "sh".into()];
        out.extend(argv.iter().cloned());
        out
    }

    /// Pids currently in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_err() {
            for pid in self.pids() {
                cmd::kill(pid, libc::SIGKILL);
            }
        }
        if !cmd::wait_until(Duration::from_secs(5), || self.pids().is_empty()) {
            eprintln!(
                "warning: processes {:?} survive in {}",
                self.pids(),
                self.dir.display()
            );
        }
        // rmdir can race with the kernel's release of the last task: retry.
        cmd::wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists()
        });
        cmd::wait_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.parent).is_ok() || !self.parent.exists()
        });
    }
}
