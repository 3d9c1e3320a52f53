//! Health over time: samples of every metric (the collector's self-metrics
//! and loss counters, the web store's) taken every few seconds and kept so
//! `/api/health` can show them as series. Only changed values are kept, plus
//! every value every 10 minutes, so a range can always start from a value.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Mutex,
};

use flowlens_query::time::{Buckets, TimeRange};
use serde::Serialize;

use crate::{
    metrics::{Kind, Sample},
    store::{disk::HEALTH_FULL_EVERY_NS, embedded::EmbeddedWriter, StoreError},
};

/// Where samples are kept.
pub trait HealthLog: Send + Sync {
    /// Keeps the values of one sampling.
    fn record(&self, ts: i64, values: &[(String, f64)]);
    /// Values in `[from - 10 min, to)`, by time.
    fn history(&self, range: TimeRange) -> Result<Vec<(i64, String, f64)>, StoreError>;
}

/// In memory, bounded in time and entries (for InfluxDB and tests).
pub struct MemoryHealthLog {
    keep_ns: i64,
    max_entries: usize,
    inner: Mutex<MemInner>,
}

#[derive(Default)]
struct MemInner {
    rows: VecDeque<(i64, usize, f64)>,
    names: Vec<String>,
    ids: HashMap<String, usize>,
    last: HashMap<usize, (i64, f64)>,
}

impl MemoryHealthLog {
    /// Keeps `keep_ns` of history, at most `max_entries` values.
    pub fn new(keep_ns: i64, max_entries: usize) -> Self {
        MemoryHealthLog {
            keep_ns,
            max_entries,
            inner: Mutex::new(MemInner::default()),
        }
    }
}

impl HealthLog for MemoryHealthLog {
    fn record(&self, ts: i64, values: &[(String, f64)]) {
        let Ok(mut m) = self.inner.lock() else { return };
        for (name, v) in values {
            let id = match m.ids.get(name) {
                Some(i) => *i,
                None => {
                    let i = m.names.len();
                    m.names.push(name.clone());
                    m.ids.insert(name.clone(), i);
                    i
                }
            };
            let due = match m.last.get(&id) {
                Some((t, old)) => old != v || ts - t >= HEALTH_FULL_EVERY_NS,
                None => true,
            };
            if due {
                m.rows.push_back((ts, id, *v));
                m.last.insert(id, (ts, *v));
            }
        }
        let cutoff = ts - self.keep_ns;
        while m
            .rows
            .front()
            .is_some_and(|r| r.0 < cutoff || m.rows.len() > self.max_entries)
        {
            m.rows.pop_front();
        }
    }

    fn history(&self, range: TimeRange) -> Result<Vec<(i64, String, f64)>, StoreError> {
        let m = self
            .inner
            .lock()
            .map_err(|_| StoreError::Internal("health log poisoned".into()))?;
        let from = range.from - HEALTH_FULL_EVERY_NS;
        Ok(m.rows
            .iter()
            .filter(|r| r.0 >= from && r.0 < range.to)
            .map(|(t, id, v)| (*t, m.names[*id].clone(), *v))
            .collect())
    }
}

/// In the embedded store's history file.
pub struct EmbeddedHealthLog {
    /// Writes through the store's queue.
    pub writer: EmbeddedWriter,
    /// Reads.
    pub reader: crate::store::disk::DiskReader,
}

impl HealthLog for EmbeddedHealthLog {
    fn record(&self, ts: i64, values: &[(String, f64)]) {
        self.writer.offer_health(ts, values.to_vec());
    }

    fn history(&self, range: TimeRange) -> Result<Vec<(i64, String, f64)>, StoreError> {
        self.reader.health(range)
    }
}

/// One metric over time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HealthSeries {
    /// `name{labels}`.
    pub name: String,
    /// Counter or gauge (from the current samples; gauge when unknown).
    pub kind: Kind,
    /// `[time_ms, value]`: the value at the end of each bucket (carried forward).
    pub data: Vec<(i64, Option<f64>)>,
    /// Counters: the increase in each bucket (a restart counts from zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub increase: Option<Vec<(i64, Option<f64>)>>,
}

/// Series of the metrics whose names start with one of `prefixes` (all when empty).
pub fn series(
    rows: &[(i64, String, f64)],
    buckets: &Buckets,
    kinds: &HashMap<String, Kind>,
    prefixes: &[&str],
) -> Vec<HealthSeries> {
    let mut by: BTreeMap<&str, Vec<(i64, f64)>> = BTreeMap::new();
    for (t, n, v) in rows {
        if prefixes.is_empty() || prefixes.iter().any(|p| n.starts_with(p)) {
            by.entry(n.as_str()).or_default().push((*t, *v));
        }
    }
    by.into_iter()
        .map(|(name, pts)| {
            let kind = kinds.get(name).copied().unwrap_or(Kind::Gauge);
            let mut data = Vec::with_capacity(buckets.count);
            let mut i = 0;
            let mut cur: Option<f64> = None;
            for b in 0..buckets.count {
                let end = buckets.time(b) + buckets.step;
                while i < pts.len() && pts[i].0 < end {
                    cur = Some(pts[i].1);
                    i += 1;
                }
                data.push((buckets.time(b) / 1_000_000, cur));
            }
            let increase = (kind == Kind::Counter).then(|| {
                // The value before the first bucket, for the first increase.
                let before = pts
                    .iter()
                    .take_while(|p| p.0 < buckets.start)
                    .last()
                    .map(|p| p.1);
                let mut prev = before;
                data.iter()
                    .map(|(t, v)| {
                        let inc = match (prev, v) {
                            (Some(p), Some(v)) if *v >= p => Some(v - p),
                            (Some(_), Some(v)) => Some(*v),
                            (None, Some(_)) => None,
                            (_, None) => None,
                        };
                        if v.is_some() {
                            prev = *v;
                        }
                        (*t, inc)
                    })
                    .collect()
            });
            HealthSeries {
                name: name.to_owned(),
                kind,
                data,
                increase,
            }
        })
        .collect()
}

/// The values of samples, keyed by `name{labels}`.
pub fn values(samples: &[Sample]) -> Vec<(String, f64)> {
    samples.iter().map(|s| (s.key(), s.value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn only_changes_are_kept_and_series_carry_forward() {
        let log = MemoryHealthLog::new(3600 * S, 1000);
        for t in 0..10 {
            let lost = if t < 5 { 0.0 } else { 7.0 };
            log.record(t * 10 * S, &[("lost".into(), lost), ("up".into(), 1.0)]);
        }
        let rows = log
            .history(TimeRange {
                from: 0,
                to: 100 * S,
            })
            .unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        let b = Buckets::new(
            TimeRange {
                from: 0,
                to: 100 * S,
            },
            20 * S,
        );
        let kinds = HashMap::from([("lost".to_owned(), Kind::Counter)]);
        let s = series(&rows, &b, &kinds, &[]);
        assert_eq!(s[0].name, "lost");
        let v: Vec<Option<f64>> = s[0].data.iter().map(|d| d.1).collect();
        assert_eq!(
            v,
            vec![Some(0.0), Some(0.0), Some(7.0), Some(7.0), Some(7.0)]
        );
        let inc: Vec<Option<f64>> = s[0]
            .increase
            .as_ref()
            .unwrap()
            .iter()
            .map(|d| d.1)
            .collect();
        assert_eq!(inc, vec![None, Some(0.0), Some(7.0), Some(0.0), Some(0.0)]);
        assert!(s[1].increase.is_none());
        assert_eq!(series(&rows, &b, &kinds, &["up"]).len(), 1);
    }
}
