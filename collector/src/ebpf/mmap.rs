//! The flow slot table and the control map, mapped into this process
//! (`BPF_F_MMAPABLE` arrays): slots are read in place without a syscall each,
//! and the reclaim horizon is published with one aligned store.

use std::{
    mem::size_of,
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{fence, AtomicU32, AtomicU64, Ordering},
};

use aya::maps::MapData;
use flowlens_ebpf::abi::{FlowCtl, FlowSlot};

/// The slot table mapped into this process (`BPF_F_MMAPABLE`): read in place,
/// without a syscall per slot.
pub(crate) struct SlotView {
    /// Keeps the map (and so the mapping's object) alive.
    _map: MapData,
    ptr: *mut FlowSlot,
    len_bytes: usize,
    /// Slots in the table.
    pub(crate) slots: usize,
    /// Slots of one CPU: slot `i` belongs to CPU `i / per_cpu`.
    pub(crate) per_cpu: usize,
}

// SAFETY: the mapping is process-wide memory; all access goes through
// volatile/atomic reads (and writes in `clear`), never through references
// that assume exclusivity.
unsafe impl Send for SlotView {}

impl SlotView {
    pub(crate) fn new(map: MapData, slots: usize) -> std::io::Result<Self> {
        let len_bytes = mapping_len(slots)?;
        // Read-only: the collector never writes the kernel's counters.
        let ptr = map_fd(&map, len_bytes, libc::PROT_READ)?;
        Ok(Self {
            _map: map,
            ptr: ptr.cast(),
            len_bytes,
            slots,
            per_cpu: slots / crate::loader::possible_cpus(),
        })
    }

    #[cfg(feature = "test-support")]
    /// A consistent copy of slot `i`, or None while it is unused (seq 0) or
    /// changing hands (odd seq, or seq changed during the copy).
    pub(crate) fn read(&self, i: usize) -> Option<FlowSlot> {
        match self.read_slot(i) {
            SlotRead::Stable(s) => Some(s),
            SlotRead::Unused | SlotRead::Busy => None,
        }
    }

    pub(crate) fn read_slot(&self, i: usize) -> SlotRead {
        if i >= self.slots {
            return SlotRead::Unused;
        }
        // SAFETY: i < slots, so the slot lies inside the mapping; seq is the
        // slot's first field, 4-byte aligned (slots are 128-byte aligned).
        let slot = unsafe { self.ptr.add(i) };
        // SAFETY: as above; AtomicU32 has the layout of u32.
        let seq = unsafe { &*(slot.cast::<AtomicU32>()) };
        let before = seq.load(Ordering::Acquire);
        if before == 0 {
            return SlotRead::Unused;
        }
        if before & 1 == 1 {
            return SlotRead::Busy;
        }
        // SAFETY: in bounds; FlowSlot is plain old data, any bytes are valid.
        let mut copy = unsafe { std::ptr::read_volatile(slot) };
        // The counters again, each as one 8-byte load (the kernel adds to them
        // while we read; a byte-wise torn copy could run ahead of the truth).
        // SAFETY: in bounds; the fields are 8-byte aligned (slot offset 56 +
        // 8k in a 128-byte-aligned slot) and AtomicU64 has the layout of u64.
        unsafe {
            let val = std::ptr::addr_of!((*slot).val);
            let load = |p: *const u64| (*p.cast::<AtomicU64>()).load(Ordering::Relaxed);
            copy.val.packets = load(std::ptr::addr_of!((*val).packets));
            copy.val.bytes = load(std::ptr::addr_of!((*val).bytes));
            copy.val.first_seen_ns = load(std::ptr::addr_of!((*val).first_seen_ns));
            copy.val.last_seen_ns = load(std::ptr::addr_of!((*val).last_seen_ns));
        }
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) == before {
            SlotRead::Stable(copy)
        } else {
            SlotRead::Busy
        }
    }

    #[cfg(feature = "test-support")]
    /// Zeroes every slot through a second, writable mapping (benchmarks and
    /// tests, with no program running); the reading mapping stays read-only.
    pub(crate) fn clear(&mut self) -> std::io::Result<()> {
        let w = map_fd(
            &self._map,
            self.len_bytes,
            libc::PROT_READ | libc::PROT_WRITE,
        )?;
        // SAFETY: w maps len_bytes >= slots * size_of::<FlowSlot>() bytes; zero
        // is a valid FlowSlot; w is unmapped right after.
        unsafe {
            std::ptr::write_bytes(w.cast::<u8>(), 0, self.slots * size_of::<FlowSlot>());
            libc::munmap(w, self.len_bytes);
        }
        Ok(())
    }
}

impl Drop for SlotView {
    fn drop(&mut self) {
        // SAFETY: ptr/len_bytes are exactly what mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len_bytes) };
    }
}

/// `flowlens_ctl` mapped writable: the reclaim horizon is published with
/// one aligned 8-byte store, which the kernel's 8-byte load cannot see torn
/// (an update through the bpf() syscall copies bytes).
pub(crate) struct CtlView {
    /// Keeps the map alive.
    _map: MapData,
    ptr: *mut FlowCtl,
    len_bytes: usize,
}

// SAFETY: as for SlotView.
unsafe impl Send for CtlView {}

impl CtlView {
    pub(crate) fn new(map: MapData) -> std::io::Result<Self> {
        let len_bytes = page_round(size_of::<FlowCtl>());
        let ptr = map_fd(&map, len_bytes, libc::PROT_READ | libc::PROT_WRITE)?;
        Ok(Self {
            _map: map,
            ptr: ptr.cast(),
            len_bytes,
        })
    }

    pub(crate) fn store_reclaim_before(&self, ns: u64) {
        // SAFETY: ptr maps at least one FlowCtl; its first field is an aligned
        // u64 (page-aligned mapping), and AtomicU64 has the layout of u64.
        let field =
            unsafe { &*std::ptr::addr_of!((*self.ptr).reclaim_before_ns).cast::<AtomicU64>() };
        field.store(ns, Ordering::Release);
    }
}

impl Drop for CtlView {
    fn drop(&mut self) {
        // SAFETY: ptr/len_bytes are exactly what mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len_bytes) };
    }
}

/// Page-rounded length of a mapping of `slots` slots.
fn mapping_len(slots: usize) -> std::io::Result<usize> {
    let size = slots
        .checked_mul(size_of::<FlowSlot>())
        .ok_or_else(|| std::io::Error::other("slot table size overflows"))?;
    Ok(page_round(size))
}

/// `bytes` rounded up to whole pages (the length the kernel maps).
fn page_round(bytes: usize) -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    bytes.div_ceil(page) * page
}

/// A shared mapping of a `BPF_F_MMAPABLE` map's values.
fn map_fd(map: &MapData, len: usize, prot: libc::c_int) -> std::io::Result<*mut libc::c_void> {
    // SAFETY: a fresh shared mapping of the map's fd; the kernel checks the
    // length against the array and the fd against BPF_F_MMAPABLE.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            map.fd().as_fd().as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ptr)
    }
}

/// One read of a slot.
pub(crate) enum SlotRead {
    /// Never used (seq 0).
    Unused,
    /// Changing hands: its new occupant is read next time.
    Busy,
    /// A consistent copy.
    Stable(FlowSlot),
}
