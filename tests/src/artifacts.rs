//! A per-scenario directory for logs, captures and flowlens output.

use std::path::{Path, PathBuf};

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
