//! A private Docker daemon per scenario: its own data/exec roots and socket,
//! its own bridge, no iptables rules, no ip_forward change; everything it
//! leaves behind is removed on drop.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::cmd;
use super::names::{free_subnet, Uniq};
use super::netns::{disable_offloads_in, ifindex, ifname_of};

/// The image every test container runs: busybox-static plus `/data` files.
pub const IMAGE: &str = "flowlens-busybox:test";

/// The docker CLI: the Debian one matching `dockerd` when present.
fn cli_path() -> &'static str {
    if Path::new("/usr/bin/docker").exists() {
        "/usr/bin/docker"
    } else {
        "docker"
    }
}

/// A running private `dockerd`.
pub struct Dockerd {
    /// `unix://<root>/d.sock`: pass as `DOCKER_HOST`.
    pub host: String,
    /// The bridge containers attach to (created by us, `--bridge`).
    pub bridge: String,
    /// The bridge's address, the containers' gateway.
    pub gateway: Ipv4Addr,
    root: PathBuf,
    child: Option<Child>,
    ip_forward_before: String,
    nft_tables_before: BTreeSet<String>,
    /// NAT on (`start_nat`): iptables rules of this daemon to remove.
    nat: bool,
    cgroup_dirs_before: BTreeSet<PathBuf>,
}

/// One container, as `docker inspect` describes it.
#[derive(Clone, Debug)]
pub struct Container {
    /// Full 64-hex id.
    pub id: String,
    /// Name without a leading `/`.
    pub name: String,
    /// `.Config.Image`.
    pub image: String,
    /// Address on the bridge.
    pub ip: Ipv4Addr,
    /// `.State.Pid` (its init process).
    pub pid: u32,
    /// The root-namespace end of its veth pair.
    pub host_veth: String,
}

/// Panics (a failure, not a skip) if `dockerd` is not installed.
pub fn require_dockerd() {
    assert!(
        cmd::exists("dockerd"),
        "dockerd not found: the Docker end-to-end tests need it (apt-get install docker.io; .ci/run installs it)"
    );
}

fn cgroup_docker_dirs() -> BTreeSet<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path().join("docker"))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn nft_tables() -> BTreeSet<String> {
    if !cmd::exists("nft") {
        return BTreeSet::new();
    }
    let out = cmd::output("nft", &["list", "tables"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

impl Dockerd {
    /// Starts the daemon and waits until it answers (at most 30 s).
    pub fn start(uniq: &Uniq) -> Self {
        Self::start_with(uniq, false)
    }

    /// [`Dockerd::start`] with Docker's NAT: masquerade for the containers and
    /// published ports (`--iptables=true --ip-masq=true`). Forwarding is
    /// switched on for the bridge only (`net.ipv4.conf.<bridge>.forwarding`;
    /// the test enables it on its own veths), never globally. On drop the
    /// rules and chains it added go: whole tables when they did not exist
    /// before, else its `DOCKER*` chains and the rules jumping to them.
    pub fn start_nat(uniq: &Uniq) -> Self {
        Self::start_with(uniq, true)
    }

    fn start_with(uniq: &Uniq, nat: bool) -> Self {
        require_dockerd();
        let n = free_subnet("10.201");
        let root = PathBuf::from(format!("/tmp/fld-{uniq}"));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create dockerd root");
        let mut d = Dockerd {
            host: format!("unix://{}/d.sock", root.display()),
            bridge: uniq.ifname("br"),
            gateway: Ipv4Addr::new(10, 201, n, 1),
            root,
            child: None,
            ip_forward_before: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                .unwrap_or_default(),
            nft_tables_before: nft_tables(),
            cgroup_dirs_before: cgroup_docker_dirs(),
            nat,
        };
        // Our own bridge instead of docker0: no clash with a real Docker, and
        // its name carries the scenario prefix.
        cmd::run("ip", &["link", "add", &d.bridge, "type", "bridge"]);
        cmd::run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", d.gateway),
                "dev",
                &d.bridge,
            ],
        );
        cmd::run("ip", &["link", "set", &d.bridge, "up"]);
        // Offloads off on the bridge and (in `run`) on both ends of every
        // container veth, for the same reason as in `VethNetns::new`: tcpdump
        // must see the segments flowlens counts, not GSO super-packets.
        disable_offloads_in(&[], &d.bridge);
        if nat {
            crate::router::forwarding(&d.bridge, true);
        }
        let iptables = if nat {
            ["--iptables=true", "--ip-masq=true"]
        } else {
            ["--iptables=false", "--ip-masq=false"]
        };
        let r = d.root.display().to_string();
        let log = std::fs::File::create(d.root.join("dockerd.log")).expect("dockerd log");
        let child = Command::new("dockerd")
            .args([
                "--data-root",
                &format!("{r}/data"),
                "--exec-root",
                &format!("{r}/x"),
            ])
            .args([
                "--pidfile",
                &format!("{r}/d.pid"),
                "--host",
                &d.host,
                "--bridge",
                &d.bridge,
            ])
            // Without NAT test traffic stays on the bridge: no rules, no
            // forwarding switch to undo afterwards. Never the global switch.
            .args(iptables)
            .args(["--ip6tables=false", "--ip-forward=false"])
            .args([
                "--userland-proxy=false",
                "--storage-driver",
                "overlay2",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dockerd: {e}"));
        d.child = Some(child);
        let up = cmd::wait_until(Duration::from_secs(30), || {
            cmd::output(
                cli_path(),
                &["-H", &d.host, "version", "--format", "{{.Server.Version}}"],
            )
            .status
            .success()
        });
        if !up {
            let log = std::fs::read_to_string(d.root.join("dockerd.log")).unwrap_or_default();
            panic!(
                "dockerd did not answer within 30 s:\n{}",
                super::flowlens::tail(&log, 30)
            );
        }
        d
    }

    /// Runs the docker CLI against this daemon; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-H", self.host.as_str()];
        all.extend_from_slice(args);
        cmd::run(cli_path(), &all).trim().to_owned()
    }

    /// Builds and imports [`IMAGE`]: busybox-static with its applet links in
    /// `/bin`, `PATH=/bin`, and `files` (path relative to `/`, content).
    pub fn import_busybox(&self, files: &[(&str, Vec<u8>)]) {
        let rootfs = self.root.join("rootfs");
        let bin = rootfs.join("bin");
        for d in [&bin, &rootfs.join("tmp"), &rootfs.join("data")] {
            std::fs::create_dir_all(d).expect("mkdir rootfs");
        }
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox not found (apt-get install busybox-static)");
        std::fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
        for applet in cmd::run(busybox, &["--list"]).split_whitespace() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
            }
        }
        for (path, content) in files {
            let p = rootfs.join(path);
            std::fs::create_dir_all(p.parent().expect("file has a parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write rootfs file");
        }
        let tar = self.root.join("rootfs.tar");
        let (t, r) = (tar.display().to_string(), rootfs.display().to_string());
        cmd::run("tar", &["-C", &r, "-cf", &t, "."]);
        self.cli(&["import", "--change", "ENV PATH=/bin", &t, IMAGE]);
    }

    /// `docker run -d --name <name> IMAGE sh -c <script>` and its description.
    /// The script should keep the container running until the test is done
    /// with `inspect` (e.g. a listening `nc`, or waiting for `/tmp/go`).
    pub fn run(&self, name: &str, script: &str) -> Container {
        self.run_with(name, &[], script)
    }

    /// [`Dockerd::run`] with extra `docker run` options (e.g. `-p 10.0.0.1:8080:5000`).
    pub fn run_with(&self, name: &str, opts: &[&str], script: &str) -> Container {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(opts);
        args.extend([IMAGE, "sh", "-c", script]);
        let id = self.cli(&args);
        let fmt = "{{.Id}} {{.Config.Image}} {{.NetworkSettings.IPAddress}} {{.State.Pid}}";
        let info = self.cli(&["inspect", "-f", fmt, name]);
        let f: Vec<&str> = info.split_whitespace().collect();
        assert_eq!(f.len(), 4, "unexpected docker inspect output {info:?}");
        assert_eq!(f[0], id, "docker run printed another id than inspect");
        let iflink = self.cli(&["exec", name, "cat", "/sys/class/net/eth0/iflink"]);
        let host_veth = iflink.parse().ok().and_then(ifname_of).unwrap_or_else(|| {
            panic!("no root-namespace interface with ifindex {iflink} for {name}")
        });
        disable_offloads_in(&[], &host_veth);
        disable_offloads_in(&["-t", f[3], "-n"], "eth0");
        Container {
            id: f[0].to_owned(),
            name: name.to_owned(),
            image: f[1].to_owned(),
            ip: f[2]
                .parse()
                .unwrap_or_else(|_| panic!("{name} has no IPv4 address: {info}")),
            pid: f[3].parse().expect("pid"),
            host_veth,
        }
    }

    /// Waits (at most 30 s) for a container to exit and returns its exit code.
    pub fn wait(&self, name: &str) -> i32 {
        let mut code = None;
        cmd::wait_until(Duration::from_secs(30), || {
            let s = self.cli(&[
                "inspect",
                "-f",
                "{{.State.Running}} {{.State.ExitCode}}",
                name,
            ]);
            if let Some(c) = s.strip_prefix("false ") {
                code = c.parse().ok();
            }
            code.is_some()
        });
        code.unwrap_or_else(|| panic!("container {name} still running after 30 s"))
    }

    /// The root directory (for the leftover check).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let ids = cmd::output(cli_path(), &["-H", &self.host, "ps", "-aq"]);
            let ids = String::from_utf8_lossy(&ids.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["-H", self.host.as_str(), "rm", "-f"];
                args.extend(ids);
                cmd::run_quiet(cli_path(), &args);
            }
            cmd::kill(child.id(), libc::SIGTERM);
            let mut exited = false;
            cmd::wait_until(Duration::from_secs(20), || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                exited
            });
            if !exited {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        // containerd / shims started for this daemon carry its root in argv.
        kill_processes_mentioning(&self.root.display().to_string());
        unmount_below(&self.root);
        let _ = std::fs::remove_dir_all(&self.root);
        cmd::run_quiet("ip", &["link", "del", &self.bridge]);
        cmd::wait_until(Duration::from_secs(5), || ifindex(&self.bridge).is_none());
        let now = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
        if now != self.ip_forward_before {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.ip_forward_before);
        }
        if self.nat {
            remove_docker_chains(&self.nft_tables_before);
        }
        for table in nft_tables().difference(&self.nft_tables_before) {
            let mut args = vec!["delete"];
            args.extend(table.split_whitespace());
            cmd::run_quiet("nft", &args);
        }
        for dir in cgroup_docker_dirs().difference(&self.cgroup_dirs_before) {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Removes the `DOCKER*` chains and the rules jumping to them from the
/// iptables tables that existed before the daemon started (new tables are
/// deleted whole by the caller).
fn remove_docker_chains(before: &BTreeSet<String>) {
    for table in ["nat", "filter"] {
        if !before.contains(&format!("table ip {table}")) {
            continue;
        }
        let rules = cmd::output("iptables", &["-t", table, "-S"]);
        let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
        for rule in rules
            .lines()
            .filter(|r| r.starts_with("-A ") && r.contains("DOCKER"))
        {
            let mut args = vec!["-t", table, "-D"];
            args.extend(rule[3..].split_whitespace());
            cmd::run_quiet("iptables", &args);
        }
        for chain in rules.lines().filter_map(|r| r.strip_prefix("-N ")) {
            if chain.starts_with("DOCKER") {
                cmd::run_quiet("iptables", &["-t", table, "-F", chain]);
                cmd::run_quiet("iptables", &["-t", table, "-X", chain]);
            }
        }
    }
}

/// SIGKILLs every process (but us) whose command line contains `needle`.
pub fn kill_processes_mentioning(needle: &str) {
    for pid in pids_mentioning(needle) {
        cmd::kill(pid, libc::SIGKILL);
    }
}

/// Pids (but ours) whose command line contains `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
                .filter(|&pid| pid != me)
                .filter(|pid| {
                    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    String::from_utf8_lossy(&cmdline)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let mut points: Vec<String> = mounts_below(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        cmd::run_quiet("umount", &["-l", &p]);
    }
}

/// Mount points at or below `dir` (from /proc/self/mountinfo).
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect()
}

/// A container script running `nc <nc_args>` as the container's init (pid =
/// `.State.Pid`, comm `nc`) that sends `/data/<send_file>`, writes what it
/// receives to `/tmp/got`, and never half-closes: its stdin is a FIFO held
/// open by a background `sleep`, so the connection, the container and its
/// veth stay up until the container is removed. With `gate`, it waits for
/// `/tmp/go` (see [`Dockerd::cli`] `exec ... touch /tmp/go`) before starting.
pub fn nc_script(nc_args: &str, send_file: &str, gate: bool) -> String {
    let wait = if gate {
        "while [ ! -e /tmp/go ]; do usleep 50000; done; "
    } else {
        ""
    };
    format!("mkfifo /tmp/in; (cat /data/{send_file}; exec sleep 100000) > /tmp/in & {wait}exec nc {nc_args} < /tmp/in > /tmp/got")
}

impl Dockerd {
    /// Waits (at most 15 s) until `/tmp/got` in `container` has `size` bytes.
    pub fn wait_received(&self, container: &str, size: usize) {
        let mut last = String::new();
        let ok = cmd::wait_until(Duration::from_secs(15), || {
            let args = [
                "-H",
                self.host.as_str(),
                "exec",
                container,
                "wc",
                "-c",
                "/tmp/got",
            ];
            // Not `cli`: the file may not exist yet.
            let out = cmd::output(cli_path(), &args);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            last.split_whitespace().next() == Some(size.to_string().as_str())
        });
        assert!(
            ok,
            "{container} received {last:?}, expected {size} bytes in /tmp/got"
        );
    }
}
