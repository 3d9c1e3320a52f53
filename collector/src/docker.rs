//! Container name and image from the Docker Engine API (unix socket), looked
//! up on a background thread and cached: the exporter never waits for it.

use std::{
    collections::{HashMap, HashSet},
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::PathBuf,
    sync::{Arc, RwLock},
    thread,
    time::Duration,
};

use crossbeam_channel::{bounded, Sender, TrySendError};
use flowlens_correlator::types::ContainerMeta;
use tracing::{debug, info};

/// Shared cache of container metadata, keyed by container id.
#[derive(Clone, Default)]
pub struct ContainerCache {
    inner: Arc<RwLock<HashMap<String, ContainerMeta>>>,
}

impl ContainerCache {
    /// Cached metadata of an id.
    pub fn get(&self, id: &str) -> Option<ContainerMeta> {
        self.inner.read().ok()?.get(id).cloned()
    }

    fn put(&self, id: String, meta: ContainerMeta) {
        if let Ok(mut m) = self.inner.write() {
            m.insert(id, meta);
        }
    }
}

/// Asks the Docker API about container ids on a background thread.
pub struct DockerResolver {
    cache: ContainerCache,
    tx: Option<Sender<String>>,
    requested: HashSet<String>,
    /// Lookups not queued because the queue was full (retried on next sight).
    pub queue_full: u64,
}

fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl DockerResolver {
    /// Starts the lookup thread if the socket exists.
    pub fn start(socket: PathBuf) -> Self {
        let cache = ContainerCache::default();
        if !socket.exists() {
            debug!(socket = %socket.display(), "No Docker API socket; container names and images stay empty.");
            return Self {
                cache,
                tx: None,
                requested: HashSet::new(),
                queue_full: 0,
            };
        }
        info!(socket = %socket.display(), "Resolving Docker container names and images.");
        let (tx, rx) = bounded::<String>(1024);
        let c = cache.clone();
        let spawned = thread::Builder::new()
            .name("flowlens-docker".into())
            .spawn(move || {
                for id in rx {
                    match inspect(&socket, &id) {
                        Ok(meta) => c.put(id, meta),
                        Err(e) => {
                            debug!(container = %id, error = %e, "Docker inspect failed.");
                            c.put(id, ContainerMeta::default());
                        }
                    }
                }
            });
        let tx = spawned.ok().map(|_| tx);
        Self {
            cache,
            tx,
            requested: HashSet::new(),
            queue_full: 0,
        }
    }

    /// The shared cache.
    pub fn cache(&self) -> ContainerCache {
        self.cache.clone()
    }

    /// Queues a lookup of a docker container id (once).
    pub fn want(&mut self, id: &str) {
        let Some(tx) = &self.tx else {
            return;
        };
        if !valid_id(id) || self.requested.contains(id) {
            return;
        }
        match tx.try_send(id.to_string()) {
            Ok(()) => {
                self.requested.insert(id.to_string());
            }
            Err(TrySendError::Full(_)) => self.queue_full += 1,
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// `GET /containers/<id>/json` over the unix socket.
fn inspect(socket: &PathBuf, id: &str) -> std::io::Result<ContainerMeta> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET /containers/{id}/json HTTP/1.0\r\nHost: docker\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.take(4 << 20).read_to_end(&mut resp)?;
    parse_inspect(&resp).ok_or_else(|| std::io::Error::other("unexpected Docker API response"))
}

fn parse_inspect(resp: &[u8]) -> Option<ContainerMeta> {
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&resp[..split]).ok()?;
    let status = head.split_whitespace().nth(1)?;
    if status != "200" {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&resp[split + 4..]).ok()?;
    Some(ContainerMeta {
        name: v
            .get("Name")
            .and_then(|n| n.as_str())
            .map(|n| n.trim_start_matches('/').to_string()),
        image: v
            .get("Config")
            .and_then(|c| c.get("Image"))
            .and_then(|i| i.as_str())
            .map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inspect_response() {
        let resp = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"Id\":\"abc\",\"Name\":\"/web-1\",\"Config\":{\"Image\":\"nginx:1.25\"}}";
        let m = parse_inspect(resp).expect("parsed");
        assert_eq!(m.name.as_deref(), Some("web-1"));
        assert_eq!(m.image.as_deref(), Some("nginx:1.25"));
        assert!(parse_inspect(b"HTTP/1.0 404 Not Found\r\n\r\n{}").is_none());
        assert!(parse_inspect(b"garbage").is_none());
    }

    #[test]
    fn only_container_ids_are_queried() {
        assert!(valid_id(&"a".repeat(64)));
        assert!(!valid_id("../../etc"));
        assert!(!valid_id(&"g".repeat(64)));
    }
}
