//! Time series and top-N tables from a cube: top N groups by total, the rest
//! folded into "Other", rates per bucket, received traffic negative in the
//! bidirectional view, and min/max/avg/p95 per series.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{cell_value, DirSel, GroupKey, Unit, OTHER};
use crate::{
    cube::{Cell, Cube},
    field::Dim,
};

/// How a series question is shaped.
#[derive(Clone, Debug)]
pub struct SeriesSpec {
    /// The dimensions the user asked for (may include `Direction`).
    pub dims: Vec<Dim>,
    /// What is counted.
    pub unit: Unit,
    /// Groups kept by name; the rest become "Other".
    pub top: usize,
    /// Received traffic as negative values, sent as positive.
    pub bidirectional: bool,
}

/// Statistics of one series over the range.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Sum over the range in the unit's count (bytes, packets, conversation records).
    pub total: u64,
    /// Smallest bucket value (rate for bytes and packets).
    pub min: f64,
    /// Largest bucket value.
    pub max: f64,
    /// Mean of the bucket values.
    pub avg: f64,
    /// 95th percentile of the bucket values (nearest rank).
    pub p95: f64,
}

/// One series: a group (and direction) over time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    /// Display name: the labels joined with " / " (`(none)` for an absent value).
    pub name: String,
    /// Dimension -> value (`null` when absent; "Other" for the folded rest).
    pub dims: BTreeMap<&'static str, Option<String>>,
    /// `out`, `in`, or `null` when both directions are summed.
    pub direction: Option<&'static str>,
    /// The folded rest.
    pub other: bool,
    /// `[time_ms, value]` per bucket (negative for `in` in the bidirectional view).
    pub data: Vec<(i64, f64)>,
    /// Over the range.
    pub stats: Stats,
}

/// Totals of everything the filter selected (all groups, Other included).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Totals {
    /// In the unit's count, both directions.
    pub total: u64,
    /// Sent by the local ends.
    pub out: u64,
    /// Received by the local ends.
    pub r#in: u64,
    /// Groups before folding.
    pub groups: usize,
}

/// The series answer (also the table's source).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesResult {
    /// Bucket start times, ms.
    pub times: Vec<i64>,
    /// Series, largest first, "Other" last.
    pub series: Vec<Series>,
    /// Totals of the filtered traffic.
    pub totals: Totals,
}

/// A row of the top-N table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TableRow {
    /// Display name.
    pub name: String,
    /// Dimension values.
    pub dims: BTreeMap<&'static str, Option<String>>,
    /// Direction, when split.
    pub direction: Option<&'static str>,
    /// The folded rest.
    pub other: bool,
    /// Statistics (rates for bytes and packets).
    #[serde(flatten)]
    pub stats: Stats,
    /// Share of the grand total, percent.
    pub percent: f64,
}

fn stats(values: &[f64], total: u64) -> Stats {
    if values.is_empty() {
        return Stats {
            total,
            ..Stats::default()
        };
    }
    let mut sorted: Vec<f64> = values.iter().map(|v| v.abs()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let rank = (0.95 * n as f64).ceil() as usize;
    Stats {
        total,
        min: sorted[0],
        max: sorted[n - 1],
        avg: sorted.iter().sum::<f64>() / n as f64,
        p95: sorted[rank.clamp(1, n) - 1],
    }
}

/// A series key before naming: group values and direction selection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SKey {
    group: GroupKey,
    dir: DirSel,
}

/// Shapes a cube into series (and their totals).
pub fn series(cube: &Cube, spec: &SeriesSpec) -> SeriesResult {
    let direction_dim = spec.dims.contains(&Dim::Direction);
    // Which direction selections each group yields.
    let dirs: &[DirSel] = if direction_dim || spec.bidirectional {
        &[DirSel::Out, DirSel::In]
    } else {
        &[DirSel::Both]
    };
    let n = cube.buckets.count;
    let mut per: HashMap<SKey, Vec<u64>> = HashMap::new();
    let mut totals = Totals::default();
    for (k, cell) in &cube.cells {
        let group = GroupKey::of(cube, k);
        for &d in dirs {
            let v = cell_value(cell, spec.unit, d);
            let e = per
                .entry(SKey {
                    group: group.clone(),
                    dir: d,
                })
                .or_insert_with(|| vec![0; n]);
            if let Some(slot) = e.get_mut(k.bucket as usize) {
                *slot = slot.saturating_add(v);
            }
        }
        add_totals(&mut totals, cell, spec.unit);
    }
    // Rank groups (both directions together unless direction is a dimension).
    let rank_key = |k: &SKey| -> (GroupKey, Option<DirSel>) {
        (k.group.clone(), direction_dim.then_some(k.dir))
    };
    let mut rank: HashMap<(GroupKey, Option<DirSel>), u64> = HashMap::new();
    for (k, v) in &per {
        *rank.entry(rank_key(k)).or_default() += v.iter().sum::<u64>();
    }
    totals.groups = rank.len();
    let mut order: Vec<((GroupKey, Option<DirSel>), u64)> = rank.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let kept: HashMap<(GroupKey, Option<DirSel>), usize> = order
        .iter()
        .take(spec.top)
        .enumerate()
        .map(|(i, (k, _))| (k.clone(), i))
        .collect();
    // Fold the rest into Other (per direction).
    let mut named: Vec<(usize, SKey, Vec<u64>)> = Vec::new();
    let mut other: BTreeMap<DirSel, Vec<u64>> = BTreeMap::new();
    for (k, v) in per {
        match kept.get(&rank_key(&k)) {
            Some(i) => named.push((*i, k, v)),
            None => {
                let o = other.entry(k.dir).or_insert_with(|| vec![0; n]);
                for (a, b) in o.iter_mut().zip(v) {
                    *a = a.saturating_add(b);
                }
            }
        }
    }
    named.sort_by_key(|a| (a.0, a.1.dir));
    let times: Vec<i64> = (0..n).map(|i| cube.buckets.time(i) / 1_000_000).collect();
    let rate = spec.unit.is_rate();
    let step = cube.buckets.step_secs();
    let make = |group: Option<&GroupKey>, dir: DirSel, counts: &[u64]| -> Series {
        let sign = if spec.bidirectional && dir == DirSel::In {
            -1.0
        } else {
            1.0
        };
        let values: Vec<f64> = counts
            .iter()
            .map(|c| {
                let v = *c as f64;
                sign * if rate { v / step } else { v }
            })
            .collect();
        let total = counts.iter().fold(0u64, |a, b| a.saturating_add(*b));
        let (name, dims) = match group {
            Some(g) => (g.name(&cube.dims), g.dims_map(&cube.dims, &spec.dims)),
            None => (
                OTHER.to_owned(),
                spec.dims
                    .iter()
                    .filter(|d| **d != Dim::Direction)
                    .map(|d| (d.name(), Some(OTHER.to_owned())))
                    .collect(),
            ),
        };
        let direction = dir.name();
        let name = match (direction, direction_dim || spec.bidirectional) {
            (Some(d), true) if spec.dims.len() > 1 || spec.bidirectional || group.is_none() => {
                format!("{name} ({d})")
            }
            (Some(d), true) => d.to_owned(),
            _ => name,
        };
        let mut dims = dims;
        if direction_dim {
            dims.insert(Dim::Direction.name(), direction.map(str::to_owned));
        }
        Series {
            name,
            dims,
            direction,
            other: group.is_none(),
            data: times.iter().copied().zip(values.iter().copied()).collect(),
            stats: stats(&values, total),
        }
    };
    let mut series: Vec<Series> = named
        .iter()
        .map(|(_, k, v)| make(Some(&k.group), k.dir, v))
        .collect();
    for (dir, v) in &other {
        series.push(make(None, *dir, v));
    }
    SeriesResult {
        times,
        series,
        totals,
    }
}

fn add_totals(t: &mut Totals, c: &Cell, unit: Unit) {
    let (o, i) = (
        cell_value(c, unit, DirSel::Out),
        cell_value(c, unit, DirSel::In),
    );
    t.out = t.out.saturating_add(o);
    t.r#in = t.r#in.saturating_add(i);
    t.total = t.total.saturating_add(cell_value(c, unit, DirSel::Both));
}

/// The top-N table: one row per series with its statistics.
pub fn table(result: &SeriesResult) -> Vec<TableRow> {
    let grand = result.totals.total.max(1) as f64;
    let split = result.series.iter().any(|s| s.direction.is_some());
    let grand = if split {
        (result.totals.out + result.totals.r#in).max(1) as f64
    } else {
        grand
    };
    result
        .series
        .iter()
        .map(|s| TableRow {
            name: s.name.clone(),
            dims: s.dims.clone(),
            direction: s.direction,
            other: s.other,
            stats: s.stats.clone(),
            percent: (s.stats.total as f64 * 100.0 / grand * 1000.0).round() / 1000.0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cube::{CubeBuilder, TrafficQuery},
        fact::{Counts, End, Role},
        time::TimeRange,
    };

    const S: i64 = 1_000_000_000;

    fn cube(dims: &[Dim]) -> Cube {
        let q = TrafficQuery::new(
            TimeRange {
                from: 0,
                to: 40 * S,
            },
            10 * S,
            dims,
            None,
        );
        let mut b = CubeBuilder::new(&q);
        let rows: &[(i64, &str, u64, u64)] = &[
            (1, "big", 1000, 10),
            (11, "big", 2000, 20),
            (21, "mid", 500, 500),
            (2, "small1", 10, 0),
            (3, "small2", 20, 0),
        ];
        for (t, c, s, r) in rows {
            b.add_end(&End {
                ts: t * S,
                host: "h",
                proto: "tcp",
                container: c,
                process: "p",
                user: "u",
                role: Role::Client,
                peer: "x",
                peer_local: None,
                server_port: None,
                raw: None,
                sent: Counts {
                    bytes: *s,
                    packets: 1,
                },
                received: Counts {
                    bytes: *r,
                    packets: 1,
                },
                conversations: 1,
            });
        }
        b.finish().unwrap()
    }

    fn spec(dims: &[Dim], top: usize, bidirectional: bool) -> SeriesSpec {
        SeriesSpec {
            dims: dims.to_vec(),
            unit: Unit::Bytes,
            top,
            bidirectional,
        }
    }

    #[test]
    fn top_n_and_other_with_rates_and_stats() {
        let c = cube(&[Dim::Container]);
        let r = series(&c, &spec(&[Dim::Container], 2, false));
        assert_eq!(r.times, vec![0, 10_000, 20_000, 30_000]);
        let names: Vec<&str> = r.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["big", "mid", "Other"]);
        let big = &r.series[0];
        assert_eq!(big.data[0], (0, 101.0), "1010 bytes over 10 s");
        assert_eq!(big.data[1], (10_000, 202.0));
        assert_eq!(big.stats.total, 3030);
        assert_eq!(
            (big.stats.min, big.stats.max, big.stats.p95),
            (0.0, 202.0, 202.0)
        );
        assert_eq!(big.stats.avg, (101.0 + 202.0) / 4.0);
        let other = &r.series[2];
        assert!(other.other);
        assert_eq!(other.dims["container"].as_deref(), Some("Other"));
        assert_eq!(other.stats.total, 30);
        assert_eq!(r.totals.total, 3030 + 1000 + 30);
        assert_eq!((r.totals.out, r.totals.r#in), (3530, 530));
        assert_eq!(r.totals.groups, 4);
        let t = table(&r);
        assert_eq!(t[0].percent, 74.631);
    }

    #[test]
    fn bidirectional_negates_received_and_direction_dimension_splits() {
        let c = cube(&[Dim::Container]);
        let r = series(&c, &spec(&[Dim::Container], 1, true));
        let names: Vec<&str> = r.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["big (out)", "big (in)", "Other (out)", "Other (in)"]
        );
        assert_eq!(r.series[1].data[0], (0, -1.0));
        assert_eq!(r.series[1].stats.max, 2.0, "stats on magnitudes");
        let r = series(&cube(&[Dim::Direction]), &spec(&[Dim::Direction], 5, false));
        let names: Vec<&str> = r.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["out", "in"]);
        assert_eq!(r.series[0].stats.total, 3530);
        assert_eq!(r.series[0].dims["direction"], Some("out".to_owned()));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(stats(&v, 0).p95, 19.0);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(stats(&v, 0).p95, 95.0);
        assert_eq!(stats(&[7.0], 0).p95, 7.0);
    }
}
