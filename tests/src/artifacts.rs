//! Directories for what a test writes: one per scenario ([`ArtifactDir`]) for
//! logs, captures and flowlens output, and named scratch ones ([`TempDir`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// `target/tmp/flowlens-e2e/<uniq>`: removed on drop after a passing
/// scenario, kept (and its path printed) after a failing one.
pub struct ArtifactDir {
    path: PathBuf,
}

impl ArtifactDir {
    /// Creates it (empty).
    pub fn new(uniq: &super::Uniq) -> Self {
        let path = crate::target_tmpdir()
            .join("flowlens-e2e")
            .join(uniq.as_str());
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        ArtifactDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ArtifactDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("FLOWLENS_KEEP_ARTIFACTS").is_some() {
            eprintln!("artifacts kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// `target/tmp/flowlens-tmp/<name>-<pid>-<n>`: removed on drop, kept (path
/// printed) when the test panicked or `FLOWLENS_KEEP_ARTIFACTS` is set.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh empty directory.
    pub fn new(name: &str) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = crate::target_tmpdir()
            .join("flowlens-tmp")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("FLOWLENS_KEEP_ARTIFACTS").is_some() {
            eprintln!("artifacts kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
