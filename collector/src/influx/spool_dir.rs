//! The spool's directory is its own: created when missing, locked while a
//! collector uses it, marked as a flowlens spool, and refused when it holds
//! anything flowlens did not put there (`spool_dir = "/"`, a directory of
//! other files, a file named `index` that is not a spool index), so the
//! spool never overwrites or deletes a file that is not its own.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::io::AsRawFd,
    path::{Component, Path, PathBuf},
};

use super::spool::SpoolError;

/// The marker file: this directory is a flowlens spool.
pub const MARKER: &str = ".flowlens-spool";
const MARKER_TEXT: &str =
    "flowlens InfluxDB spool: flowlens owns this directory and deletes its segments; keep other files elsewhere.\n";

/// Names the spool writes (`seg-<20 digits>.spool`, `index`, `index.tmp`,
/// `lock`, the marker).
fn is_spool_name(name: &str) -> bool {
    if matches!(name, "lock" | "index" | "index.tmp" | MARKER) {
        return true;
    }
    name.strip_prefix("seg-")
        .and_then(|r| r.strip_suffix(".spool"))
        .is_some_and(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `text` is a spool index (`v1 <sequence> <offset>`).
pub fn is_index(text: &str) -> bool {
    let mut it = text.split_whitespace();
    it.next() == Some("v1")
        && it.next().is_some_and(|n| n.parse::<u64>().is_ok())
        && it.next().is_some_and(|n| n.parse::<u64>().is_ok())
        && it.next().is_none()
}

/// The root directory, however it is spelled (`/`, `/..`, `//`).
fn is_root(dir: &Path) -> bool {
    let mut depth = 0i32;
    let mut absolute = false;
    for c in dir.components() {
        match c {
            Component::RootDir => absolute = true,
            Component::CurDir => {}
            Component::ParentDir => depth = (depth - 1).max(0),
            Component::Normal(_) | Component::Prefix(_) => depth += 1,
        }
    }
    absolute && depth == 0
}

/// What in `dir` is not the spool's: a list for the error message (at most
/// a few names).
fn foreign_entries(dir: &Path) -> io::Result<Vec<String>> {
    let mut foreign = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_spool_name(&name) {
            foreign.push(name);
            continue;
        }
        if name == "index" {
            let ours = fs::read_to_string(entry.path()).is_ok_and(|t| is_index(&t));
            if !ours {
                foreign.push("index (not a flowlens spool index)".into());
            }
        }
    }
    foreign.sort();
    Ok(foreign)
}

/// Creates (when missing), checks and locks `dir` as a spool directory;
/// returns the locked `lock` file (the lock lasts as long as it is open).
pub fn claim(dir: &Path) -> Result<File, SpoolError> {
    let io_err = |source| SpoolError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let refuse = |found: String| SpoolError::NotOwn {
        path: dir.to_path_buf(),
        found,
    };
    if is_root(dir) {
        return Err(refuse("it is the root directory".into()));
    }
    fs::create_dir_all(dir).map_err(io_err)?;
    let real: PathBuf = fs::canonicalize(dir).map_err(io_err)?;
    if is_root(&real) {
        return Err(refuse("it is the root directory".into()));
    }
    let foreign = foreign_entries(dir).map_err(io_err)?;
    if !foreign.is_empty() {
        let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
        let more = foreign.len().saturating_sub(shown.len());
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        return Err(refuse(format!(
            "it holds files flowlens did not write: {}{tail}",
            shown.join(", ")
        )));
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(io_err)?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(SpoolError::Locked(dir.to_path_buf()));
    }
    let marker = dir.join(MARKER);
    if !marker.exists() {
        fs::write(&marker, MARKER_TEXT).map_err(io_err)?;
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir()
                .join(format!("flowlens-spooldir-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            Self(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn names_and_indexes() {
        assert!(is_spool_name("seg-00000000000000000001.spool"));
        assert!(!is_spool_name("seg-1.spool") && !is_spool_name("notes.txt"));
        assert!(is_index("v1 3 1024\n") && !is_index("precious\n") && !is_index("v1 3"));
        for root in ["/", "//", "/..", "/tmp/..", "/./"] {
            assert!(is_root(Path::new(root)), "{root}");
        }
        for not in ["/var/lib/flowlens", "spool", "./", "/tmp/../tmp"] {
            assert!(!is_root(Path::new(not)), "{not}");
        }
    }

    #[test]
    fn a_directory_is_created_marked_and_kept_to_itself() {
        let d = TempDir::new("own");
        let spool = d.0.join("a").join("spool");
        let lock = claim(&spool).expect("created");
        assert!(spool.join(MARKER).is_file() && spool.join("lock").is_file());
        drop(lock);
        // Its own files are fine (also from before the marker existed).
        fs::write(spool.join("index"), "v1 1 0\n").expect("index");
        fs::write(spool.join("seg-00000000000000000001.spool"), b"").expect("seg");
        fs::remove_file(spool.join(MARKER)).expect("rm marker");
        drop(claim(&spool).expect("an older spool"));
        // A foreign file, or an index that is not ours: refused, untouched.
        fs::write(spool.join("notes.txt"), "mine").expect("notes");
        let e = claim(&spool).expect_err("foreign file");
        assert!(e.to_string().contains("notes.txt"), "{e}");
        fs::remove_file(spool.join("notes.txt")).expect("rm");
        fs::write(spool.join("index"), "precious\n").expect("index");
        let e = claim(&spool).expect_err("foreign index");
        assert!(e.to_string().contains("not a flowlens spool index"), "{e}");
        assert_eq!(
            fs::read_to_string(spool.join("index")).expect("read"),
            "precious\n"
        );
        let e = claim(Path::new("/")).expect_err("root");
        assert!(e.to_string().contains("root directory"), "{e}");
    }
}
