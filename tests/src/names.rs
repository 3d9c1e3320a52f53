//! Unique names and addresses, so tests never collide with each other, with a
//! previous crashed run, or with what the machine already has.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

use super::cmd;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A per-scenario name prefix: `fl` + pid (4 digits, zero padded) + a
/// per-process counter, e.g. `fl04217` + `3`. Interface names derived from it
/// (`<uniq>h`, `<uniq>br`) stay within the kernel's 15 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uniq(String);

impl Uniq {
    /// A fresh prefix.
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Uniq(format!("fl{:04}{}", std::process::id() % 10_000, n % 1000))
    }

    /// The prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<prefix><suffix>`, checked against IFNAMSIZ.
    pub fn ifname(&self, suffix: &str) -> String {
        let name = format!("{}{}", self.0, suffix);
        assert!(
            name.len() <= 15,
            "interface name {name} is longer than 15 bytes"
        );
        name
    }
}

impl Default for Uniq {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for Uniq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A random `u64` from the standard library's randomly keyed hasher (no extra
/// dependency needed for test identifiers).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// 64 lowercase hex digits, shaped like a Docker container id.
pub fn random_hex64() -> String {
    (0..4).map(|_| format!("{:016x}", random_u64())).collect()
}

/// A third octet `n` such that no interface on the host has an address in
/// `<first two octets>.n.0/24` (e.g. `"10.200"`). Starts at a pid-dependent
/// place so concurrent test processes usually pick different subnets.
pub fn free_subnet(first_two: &str) -> u8 {
    let used = cmd::run("ip", &["-o", "-4", "addr", "show"]);
    let start =
        (std::process::id() as usize * 7 + COUNTER.fetch_add(1, Ordering::Relaxed) as usize) % 250;
    for i in 0..250 {
        let n = ((start + i) % 250 + 1) as u8;
        if !used.contains(&format!(" {first_two}.{n}.")) {
            return n;
        }
    }
    panic!("no free /24 left in {first_two}.0.0/16");
}
