//! A short-lived cache of API answers: identical requests within the TTL (a
//! dashboard refreshing, several panels asking the same) are answered once.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::body::Bytes;

/// A cached answer.
#[derive(Clone, Debug)]
pub struct Cached {
    /// Content type.
    pub content_type: String,
    /// Body.
    pub body: Bytes,
}

/// Bounded by entries and bytes; entries expire after the TTL.
pub struct ResponseCache {
    ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, (Instant, Cached)>,
    order: VecDeque<String>,
    bytes: usize,
}

impl ResponseCache {
    /// A cache; a zero TTL disables it.
    pub fn new(ttl: Duration, max_entries: usize, max_bytes: usize) -> Self {
        ResponseCache {
            ttl,
            max_entries,
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether it caches at all.
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// A fresh answer for `key`.
    pub fn get(&self, key: &str) -> Option<Cached> {
        let m = self.inner.lock().ok()?;
        let (at, c) = m.map.get(key)?;
        (at.elapsed() < self.ttl).then(|| c.clone())
    }

    /// Keeps an answer (too large ones are not kept).
    pub fn put(&self, key: String, c: Cached) {
        if !self.enabled() || c.body.len() > self.max_bytes / 4 {
            return;
        }
        let Ok(mut m) = self.inner.lock() else { return };
        let now = Instant::now();
        // Drop expired and oldest entries until there is room.
        while let Some(k) = m.order.front().cloned() {
            let expired = m.map.get(&k).is_none_or(|(at, _)| at.elapsed() >= self.ttl);
            let full = m.map.len() >= self.max_entries || m.bytes + c.body.len() > self.max_bytes;
            if !expired && !full {
                break;
            }
            m.order.pop_front();
            if let Some((_, old)) = m.map.remove(&k) {
                m.bytes -= old.body.len();
            }
        }
        m.bytes += c.body.len();
        if let Some((_, old)) = m.map.insert(key.clone(), (now, c)) {
            m.bytes -= old.body.len();
            m.order.retain(|k| k != &key);
        }
        m.order.push_back(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_stays_bounded() {
        let c = ResponseCache::new(Duration::from_millis(50), 2, 1000);
        let a = |s: &'static str| Cached {
            content_type: "application/json".into(),
            body: Bytes::from_static(s.as_bytes()),
        };
        c.put("a".into(), a("1"));
        c.put("b".into(), a("2"));
        c.put("c".into(), a("3"));
        assert!(c.get("a").is_none(), "the oldest went");
        assert_eq!(c.get("c").unwrap().body, "3");
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get("c").is_none());
        let off = ResponseCache::new(Duration::ZERO, 2, 1000);
        off.put("a".into(), a("1"));
        assert!(off.get("a").is_none());
    }
}
