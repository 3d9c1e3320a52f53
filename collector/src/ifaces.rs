//! Network interfaces of this host's namespace, read from `/sys/class/net`.

use std::{collections::BTreeMap, fs, path::Path};

/// An interface as listed by sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// IFF_UP is set.
    pub up: bool,
    /// ARPHRD_* link type (1 Ethernet, 772 loopback, 65534 none/tun, ...).
    pub link_type: u32,
}

/// Link types whose frames start with an Ethernet header (what the flow
/// programs parse): Ethernet (veth, bridges, NICs) and loopback.
pub const ETHERNET_LIKE: [u32; 2] = [1, 772];

impl Iface {
    /// Whether the flow programs can parse this interface's frames.
    pub fn is_ethernet(&self) -> bool {
        ETHERNET_LIKE.contains(&self.link_type)
    }
}

const IFF_UP: u32 = 0x1;

fn read_trimmed(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Lists the interfaces, keyed by index.
pub fn list() -> BTreeMap<u32, Iface> {
    let mut out = BTreeMap::new();
    let Ok(dir) = fs::read_dir("/sys/class/net") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let base = entry.path();
        let Some(index) = read_trimmed(&base.join("ifindex")).and_then(|s| s.parse().ok()) else {
            continue;
        };
        let flags = read_trimmed(&base.join("flags"))
            .and_then(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        let link_type = read_trimmed(&base.join("type"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        out.insert(
            index,
            Iface {
                name,
                index,
                up: flags & IFF_UP != 0,
                link_type,
            },
        );
    }
    out
}

/// Looks up one interface by name.
pub fn by_name(name: &str) -> Option<Iface> {
    list().into_values().find(|i| i.name == name)
}
