//! A capture file mapped into memory (read-only), so a replay reads packet
//! headers where the page cache holds them instead of copying every byte
//! into a buffer first (on a capture of whole packets the copy was most of
//! the time).
//!
//! Only regular files are mapped; pipes, terminals and character devices
//! (stdin, `<(tcpdump -w - ...)`) are read as streams. A file that grows
//! while it is read (tcpdump still writing) is mapped again further. A file
//! that *shrinks* while mapped would make the kernel raise SIGBUS on the next
//! read of a page that is gone: [`install_sigbus_report`] turns that into a
//! clear message and exit code 1 instead of "Bus error".

use std::{
    fs::File,
    io,
    os::unix::io::AsRawFd,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

/// The pager maps this much at a time ahead of the reader.
const CHUNK: usize = 2 << 20;
/// How far ahead of the reader the pager keeps pages mapped.
const AHEAD: usize = 8 * CHUNK;
/// Bytes read behind the reader before their pages are unmapped (the page
/// cache keeps them; the process's RSS stays about this size, not the file's).
const RELEASE_CHUNK: usize = 32 << 20;

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096)
}

/// One `mmap` of a file: unmapped when the last holder (the reader, the
/// pager) drops it.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: a read-only mapping; holders only read it or give the kernel
// advice about it, from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &File, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open
        // file; the kernel picks the address. The result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Read ahead aggressively: a replay walks the file once, front to back.
        // SAFETY: advice on the mapping just made; failure only loses the hint.
        unsafe {
            libc::madvise(ptr, len, libc::MADV_SEQUENTIAL);
        }
        Ok(Self { ptr, len })
    }

    /// `madvise(advice)` on `[from, to)`, page-aligned; false when refused.
    fn advise(&self, from: usize, to: usize, advice: libc::c_int) -> bool {
        let to = to.min(self.len);
        if from >= to {
            return true;
        }
        // SAFETY: a page-aligned range inside the mapping (`from` is always a
        // multiple of the page size here). POPULATE_READ maps pages,
        // DONTNEED on a shared file mapping drops page table entries only:
        // neither changes what the mapping reads.
        unsafe { libc::madvise(self.ptr.cast::<u8>().add(from).cast(), to - from, advice) == 0 }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly what mmap returned; no holder is left.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// What the reader tells the pager.
#[derive(Default)]
struct PagerState {
    /// The reader's position in the mapping.
    pos: AtomicUsize,
    stop: AtomicBool,
}

/// A thread that maps the pages ahead of the reader (`MADV_POPULATE_READ`)
/// and unmaps those behind it, so the reader's thread spends its time on
/// packets, not in page faults: on a capture of whole packets mapping and
/// unmapping the pages cost about as much as parsing them.
struct Pager {
    state: Arc<PagerState>,
    thread: JoinHandle<()>,
}

impl Pager {
    fn start(map: Arc<Mapping>) -> Option<Self> {
        let state = Arc::new(PagerState::default());
        let st = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("replay-pager".into())
            .spawn(move || page(&map, &st))
            .ok()?;
        Some(Self { state, thread })
    }

    fn stop(self) {
        self.state.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

/// The pager's loop: keep `[pos, pos + AHEAD)` mapped, unmap what is
/// [`RELEASE_CHUNK`] behind `pos`, sleep until the reader moves on.
fn page(map: &Mapping, st: &PagerState) {
    let page = page_size();
    let (mut mapped, mut released) = (0usize, 0usize);
    let mut populate = true;
    while !st.stop.load(Ordering::Acquire) {
        let pos = st.pos.load(Ordering::Acquire);
        let want = pos.saturating_add(AHEAD).min(map.len);
        if populate && mapped < want {
            let to = (mapped + CHUNK).min(map.len);
            // Refused before Linux 5.14: the reader's own faults map them.
            populate = map.advise(mapped, to, libc::MADV_POPULATE_READ);
            mapped = to;
            continue;
        }
        let behind = pos.saturating_sub(CHUNK) / page * page;
        if behind >= released + RELEASE_CHUNK {
            map.advise(released, behind, libc::MADV_DONTNEED);
            released = behind;
            continue;
        }
        std::thread::park();
    }
}

/// A read-only mapping of a whole regular file.
pub struct MappedFile {
    map: Arc<Mapping>,
    file: File,
    pager: Option<Pager>,
    /// The reader's chunk the pager knows of.
    told: usize,
}

impl MappedFile {
    /// Maps `file` when it is a regular, non-empty file; gives it back
    /// otherwise (read it as a stream), or when mapping fails.
    pub fn new(file: File) -> Result<Self, File> {
        let len = match file.metadata() {
            Ok(m) if m.file_type().is_file() => m.len(),
            _ => return Err(file),
        };
        let Ok(len) = usize::try_from(len) else {
            return Err(file);
        };
        if len == 0 {
            return Err(file);
        }
        match Mapping::new(&file, len) {
            Ok(map) => {
                let map = Arc::new(map);
                Ok(Self {
                    pager: Pager::start(Arc::clone(&map)),
                    map,
                    file,
                    told: 0,
                })
            }
            Err(_) => Err(file),
        }
    }

    /// The mapped bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as the
        // mapping lives (this value holds it); nothing writes through it.
        // (A file truncated by another process raises SIGBUS on access, see
        // the module doc.)
        unsafe { std::slice::from_raw_parts(self.map.ptr.cast::<u8>(), self.map.len) }
    }

    /// The reader is at `pos`: the pager maps ahead of it and unmaps behind.
    #[inline]
    pub fn reading_at(&mut self, pos: usize) {
        let chunk = pos / CHUNK;
        if chunk == self.told {
            return;
        }
        self.told = chunk;
        if let Some(p) = &self.pager {
            p.state.pos.store(pos, Ordering::Release);
            p.thread.thread().unpark();
        }
    }

    /// Maps the file again when it grew since it was mapped; true when there
    /// are more bytes now.
    pub fn grow(&mut self) -> io::Result<bool> {
        let now = usize::try_from(self.file.metadata()?.len()).unwrap_or(usize::MAX);
        if now <= self.map.len {
            return Ok(false);
        }
        let map = Arc::new(Mapping::new(&self.file, now)?);
        if let Some(p) = self.pager.take() {
            p.stop();
        }
        // The old mapping goes with its last holder: `&mut self`, so no
        // slice of it is alive.
        self.pager = Pager::start(Arc::clone(&map));
        self.map = map;
        self.told = 0;
        Ok(true)
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if let Some(p) = self.pager.take() {
            p.stop();
        }
    }
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile")
            .field("len", &self.map.len)
            .finish()
    }
}

static SIGBUS_INSTALLED: AtomicBool = AtomicBool::new(false);

const SIGBUS_MESSAGE: &[u8] = b"\nflowlens replay: error: a capture file shrank while it was being read \
(it is memory-mapped; another process truncated or rewrote it). What was read before is lost from this \
run's outputs; InfluxDB records already spooled are kept. Replay a file that is complete, or read it as a \
stream: flowlens replay - < FILE\n";

extern "C" fn on_sigbus(_: libc::c_int) {
    // Only async-signal-safe calls: write(2) and _exit(2).
    // SAFETY: a static buffer and the process's stderr.
    unsafe {
        libc::write(
            libc::STDERR_FILENO,
            SIGBUS_MESSAGE.as_ptr().cast(),
            SIGBUS_MESSAGE.len(),
        );
        libc::_exit(1);
    }
}

/// Reports SIGBUS (a mapped capture truncated under the replay) with a
/// message naming the cause and exits 1. Installed once, by `flowlens replay`.
pub fn install_sigbus_report() {
    if SIGBUS_INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: a zeroed sigaction with a handler that only calls
    // async-signal-safe functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "FLOWLENS_TEST_SIGBUS_CHILD";

    /// In a child process (see below): maps a file, truncates it, reads.
    #[test]
    fn sigbus_child() {
        let Some(path) = std::env::var_os(CHILD) else {
            return;
        };
        std::fs::write(&path, vec![7u8; 64 << 10]).expect("write");
        let map = MappedFile::new(File::open(&path).expect("open")).expect("mapped");
        install_sigbus_report();
        std::fs::File::create(&path).expect("truncate");
        // The page is gone: this read raises SIGBUS.
        let b = map.bytes()[40 << 10];
        panic!("read {b} from a truncated mapping without SIGBUS");
    }

    #[test]
    fn a_file_truncated_under_the_mapping_is_a_clear_error() {
        let path = std::env::temp_dir().join(format!("flowlens-sigbus-{}", std::process::id()));
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "replay::mapped::tests::sigbus_child",
                "--nocapture",
            ])
            .env(CHILD, &path)
            .output()
            .expect("run the child");
        let _ = std::fs::remove_file(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("a capture file shrank while it was being read"),
            "{stderr}"
        );
    }
}
