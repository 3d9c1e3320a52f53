//! Export-time lookups (user, interface and container names) backed by the
//! collector's caches: never blocking.

use std::collections::BTreeMap;

use flowlens_correlator::types::{ContainerMeta, Lookup};

use crate::{docker::ContainerCache, enrich::UserNames};

/// The names records are enriched with at export.
pub struct Names {
    /// uid -> user (None: a capture, where no process is known).
    pub users: Option<UserNames>,
    /// ifindex -> interface name.
    pub ifaces: BTreeMap<u32, String>,
    /// Docker container names and images.
    pub containers: ContainerCache,
}

impl Names {
    /// Names of this host: /etc/passwd, interfaces as polled, `containers`.
    pub fn host(containers: ContainerCache) -> Self {
        Self {
            users: Some(UserNames::new()),
            ifaces: BTreeMap::new(),
            containers,
        }
    }

    /// Names of a capture: interface names only.
    pub fn capture() -> Self {
        Self {
            users: None,
            ifaces: BTreeMap::new(),
            containers: ContainerCache::default(),
        }
    }

    /// Reloads /etc/passwd if it changed (at most every few seconds).
    pub fn refresh(&mut self) {
        if let Some(u) = &mut self.users {
            u.name(0);
        }
    }
}

impl Lookup for Names {
    fn user_name(&self, uid: u32) -> Option<String> {
        self.users.as_ref().and_then(|u| u.cached(uid))
    }
    fn iface_name(&self, ifindex: u32) -> Option<String> {
        self.ifaces.get(&ifindex).cloned()
    }
    fn container_meta(&self, runtime: &str, id: &str) -> Option<ContainerMeta> {
        if runtime == "docker" {
            self.containers.get(id)
        } else {
            None
        }
    }
}
