//! Enrichment from the file system: cgroup id -> path, uid -> user name,
//! pid -> executable. Each is cached; misses never block for long.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

/// Finds the cgroup v2 mount point (`/sys/fs/cgroup` on unified systems,
/// `/sys/fs/cgroup/unified` in hybrid mode).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_cgroup2_mount(&text)
}

fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        // ... mount_point ... - fstype source options
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        if post.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let mount_point = pre.split_whitespace().nth(4)?;
        return Some(PathBuf::from(mount_point.replace("\\040", " ")));
    }
    None
}

/// Maps cgroup v2 ids (directory inodes) to paths relative to the v2 root.
pub struct CgroupResolver {
    root: Option<PathBuf>,
    by_id: HashMap<u64, String>,
    last_scan: Option<Instant>,
    min_rescan: Duration,
}

impl CgroupResolver {
    /// Scans the hierarchy once.
    pub fn new() -> Self {
        let mut r = Self {
            root: cgroup2_mount(),
            by_id: HashMap::new(),
            last_scan: None,
            min_rescan: Duration::from_millis(200),
        };
        r.rescan();
        r
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let rel = dir
                .strip_prefix(&root)
                .map(|p| format!("/{}", p.display()))
                .unwrap_or_else(|_| "/".into());
            self.by_id.insert(meta.ino(), rel);
            if let Ok(entries) = fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
        }
    }

    /// Path of a cgroup id; rescans (rate-limited) on a miss. Entries are kept
    /// after the cgroup is removed, so exited containers stay attributed.
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        let due = self
            .last_scan
            .map(|t| t.elapsed() >= self.min_rescan)
            .unwrap_or(true);
        if due {
            self.rescan();
        }
        self.by_id.get(&id).cloned()
    }

    /// Records a path learned elsewhere (e.g. /proc/<pid>/cgroup).
    pub fn remember(&mut self, path: &str) -> Option<u64> {
        let root = self.root.as_ref()?;
        let full = root.join(path.trim_start_matches('/'));
        let ino = fs::metadata(full).ok()?.ino();
        self.by_id.insert(ino, path.to_string());
        Some(ino)
    }
}

impl Default for CgroupResolver {
    fn default() -> Self {
        Self::new()
    }
}

/// uid -> user name from /etc/passwd, reloaded when the file changes.
pub struct UserNames {
    names: HashMap<u32, String>,
    mtime: Option<SystemTime>,
    checked: Option<Instant>,
}

impl UserNames {
    /// Loads /etc/passwd.
    pub fn new() -> Self {
        let mut u = Self {
            names: HashMap::new(),
            mtime: None,
            checked: None,
        };
        u.refresh();
        u
    }

    fn refresh(&mut self) {
        self.checked = Some(Instant::now());
        let mtime = fs::metadata("/etc/passwd").and_then(|m| m.modified()).ok();
        if mtime.is_some() && mtime == self.mtime {
            return;
        }
        self.mtime = mtime;
        if let Ok(text) = fs::read_to_string("/etc/passwd") {
            self.names = parse_passwd(&text);
        }
    }

    /// Name of a uid.
    pub fn name(&mut self, uid: u32) -> Option<String> {
        if self
            .checked
            .map(|t| t.elapsed() > Duration::from_secs(5))
            .unwrap_or(true)
        {
            self.refresh();
        }
        self.names.get(&uid).cloned()
    }

    /// Name of a uid without refreshing.
    pub fn cached(&self, uid: u32) -> Option<String> {
        self.names.get(&uid).cloned()
    }
}

impl Default for UserNames {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut m = HashMap::new();
    for line in text.lines() {
        let mut f = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>() {
            m.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    m
}

/// The executable of a running process (`/proc/<pid>/exe`, in the process's
/// own mount namespace).
pub fn proc_exe(pid: u32) -> Option<String> {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(
        exe.to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string(),
    )
}

/// pid -> executable path, from exec events and /proc, kept for a grace
/// period after the process exits.
pub struct ExeCache {
    by_pid: HashMap<u32, (String, Option<Instant>)>,
    grace: Duration,
}

impl ExeCache {
    /// Empty cache keeping exited processes for `grace`.
    pub fn new(grace: Duration) -> Self {
        Self {
            by_pid: HashMap::new(),
            grace,
        }
    }

    /// An exec event.
    pub fn exec(&mut self, pid: u32, exe: String) {
        self.by_pid.insert(pid, (exe, None));
    }

    /// A thread-group exit.
    pub fn exit(&mut self, pid: u32) {
        if let Some(e) = self.by_pid.get_mut(&pid) {
            e.1 = Some(Instant::now());
        }
    }

    /// Executable of a pid: cached, else /proc/<pid>/exe.
    pub fn exe(&mut self, pid: u32) -> Option<String> {
        if let Some((e, _)) = self.by_pid.get(&pid) {
            return Some(e.clone());
        }
        let exe = proc_exe(pid)?;
        self.by_pid.insert(pid, (exe.clone(), None));
        Some(exe)
    }

    /// Drops entries of processes that exited longer ago than the grace period.
    pub fn expire(&mut self) {
        let grace = self.grace;
        self.by_pid
            .retain(|_, (_, exited)| exited.map(|t| t.elapsed() < grace).unwrap_or(true));
        // Bound the cache: processes we never saw exit (missed events) are
        // dropped when they no longer exist.
        if self.by_pid.len() > 65_536 {
            self.by_pid
                .retain(|pid, _| Path::new(&format!("/proc/{pid}")).exists());
        }
    }

    /// Whether the cache is empty.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_and_unified_cgroup2_mounts() {
        let hybrid = "25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn passwd_parsing() {
        let m = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/usr/sbin/nologin\nbad\n",
        );
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn exe_cache_keeps_exited_processes_for_grace() {
        let mut c = ExeCache::new(Duration::from_secs(60));
        c.exec(4_000_000, "/usr/bin/curl".into());
        c.exit(4_000_000);
        c.expire();
        assert_eq!(c.exe(4_000_000).as_deref(), Some("/usr/bin/curl"));
        let mut c = ExeCache::new(Duration::ZERO);
        c.exec(4_000_000, "/usr/bin/curl".into());
        c.exit(4_000_000);
        c.expire();
        assert!(c.is_empty());
    }
}
