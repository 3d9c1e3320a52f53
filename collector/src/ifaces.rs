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

/// Traffic an interface's driver counted (`/sys/class/net/<name>/statistics`):
/// every frame, whatever its protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Frames received plus sent.
    pub packets: u64,
    /// Bytes received plus sent (link-layer lengths).
    pub bytes: u64,
}

impl std::ops::AddAssign for LinkCounters {
    fn add_assign(&mut self, o: Self) {
        self.packets = self.packets.saturating_add(o.packets);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }
}

/// The counters of interface `name` now; `None` when it has none (gone).
pub fn counters(name: &str) -> Option<LinkCounters> {
    let dir = Path::new("/sys/class/net").join(name).join("statistics");
    let read = |f: &str| -> Option<u64> { read_trimmed(&dir.join(f))?.parse().ok() };
    Some(LinkCounters {
        packets: read("rx_packets")?.saturating_add(read("tx_packets")?),
        bytes: read("rx_bytes")?.saturating_add(read("tx_bytes")?),
    })
}

/// Which interfaces a run captures on: the ones named (`--iface`), or
/// (none named) every Ethernet-like interface whose name matches an include
/// pattern (all when there is none) and no exclude pattern.
#[derive(Debug, Clone, Default)]
pub struct IfaceSelection {
    /// Named with `--iface`: exactly these, by name (re-attached when one is
    /// deleted and created again).
    pub explicit: Vec<String>,
    /// `--iface-include`: glob patterns (`*`, `?`, `[a-z]`); empty: every name.
    pub include: Vec<glob::Pattern>,
    /// `--iface-exclude`: glob patterns.
    pub exclude: Vec<glob::Pattern>,
}

impl IfaceSelection {
    /// Whether `name` was named with `--iface`.
    pub fn is_named(&self, name: &str) -> bool {
        self.explicit.iter().any(|n| n == name)
    }

    /// Interfaces appear and go and are attached by themselves (no `--iface`).
    pub fn is_auto(&self) -> bool {
        self.explicit.is_empty()
    }

    /// Whether the run captures on `iface` (only Ethernet-like ones: what
    /// the flow programs parse).
    pub fn wants(&self, iface: &Iface) -> bool {
        if !iface.is_ethernet() {
            return false;
        }
        if !self.is_auto() {
            return self.is_named(&iface.name);
        }
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(&iface.name)))
            && !self.exclude.iter().any(|p| p.matches(&iface.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, link_type: u32) -> Iface {
        Iface {
            name: name.into(),
            index: 1,
            up: true,
            link_type,
        }
    }

    fn patterns(p: &[&str]) -> Vec<glob::Pattern> {
        p.iter()
            .map(|s| glob::Pattern::new(s).expect("glob"))
            .collect()
    }

    #[test]
    fn selection_by_name_and_by_patterns() {
        let all = IfaceSelection::default();
        assert!(all.wants(&iface("eth0", 1)) && all.wants(&iface("lo", 772)));
        assert!(!all.wants(&iface("tun0", 65534)), "not Ethernet");
        let containers = IfaceSelection {
            include: patterns(&["veth*", "docker0"]),
            exclude: patterns(&["veth9*"]),
            ..Default::default()
        };
        assert!(containers.wants(&iface("veth1a2b", 1)));
        assert!(containers.wants(&iface("docker0", 1)));
        assert!(!containers.wants(&iface("veth9abc", 1)), "excluded");
        assert!(!containers.wants(&iface("eth0", 1)), "not included");
        let no_uplink = IfaceSelection {
            exclude: patterns(&["eth[0-9]"]),
            ..Default::default()
        };
        assert!(!no_uplink.wants(&iface("eth0", 1)) && no_uplink.wants(&iface("eth10", 1)));
        let named = IfaceSelection {
            explicit: vec!["wg0".into()],
            include: patterns(&["*"]),
            ..Default::default()
        };
        assert!(named.wants(&iface("wg0", 1)) && !named.wants(&iface("eth0", 1)));
        assert!(
            !named.wants(&iface("wg0", 65534)),
            "recreated as another link type"
        );
    }
}
