//! Sankey diagrams between two or three dimensions: the top N combinations
//! by total, the rest folded into "Other" in every column; node names are
//! unique across columns (`dimension: value`), as ECharts requires.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::{cell_value, DirSel, Unit, NONE, OTHER};
use crate::{cube::Cube, field::Dim};

/// A node of one column.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SankeyNode {
    /// Unique name, `dimension: value`.
    pub name: String,
    /// The dimension (column).
    pub dimension: &'static str,
    /// The value (`(none)` when absent, `Other` for the folded rest).
    pub value: String,
    /// Column index (0 = leftmost).
    pub depth: usize,
    /// Total through the node.
    pub total: u64,
}

/// A flow between nodes of adjacent columns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SankeyLink {
    /// Source node name.
    pub source: String,
    /// Target node name.
    pub target: String,
    /// Total of the unit (bytes, packets, conversation records) over the range.
    pub value: u64,
}

/// The sankey answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sankey {
    /// Nodes, by column then by total.
    pub nodes: Vec<SankeyNode>,
    /// Links, by column then by value.
    pub links: Vec<SankeyLink>,
    /// Total of the filtered traffic.
    pub total: u64,
    /// Combinations before folding.
    pub combinations: usize,
}

/// Builds the sankey of `dims` (2 or 3; `Direction` allowed) from a cube grouped by them.
pub fn sankey(cube: &Cube, dims: &[Dim], unit: Unit, top: usize) -> Sankey {
    let dirs: &[DirSel] = if dims.contains(&Dim::Direction) {
        &[DirSel::Out, DirSel::In]
    } else {
        &[DirSel::Both]
    };
    // Totals per combination (values in the order of `dims`).
    let mut combos: HashMap<Vec<String>, u64> = HashMap::new();
    let mut total = 0u64;
    for (k, cell) in &cube.cells {
        for &d in dirs {
            let v = cell_value(cell, unit, d);
            if v == 0 {
                continue;
            }
            total = total.saturating_add(v);
            let combo: Vec<String> = dims
                .iter()
                .map(|dim| {
                    if *dim == Dim::Direction {
                        return d.name().unwrap_or_default().to_owned();
                    }
                    let i = cube
                        .dims
                        .iter()
                        .position(|x| x == dim)
                        .unwrap_or(usize::MAX);
                    let l = k.vals.get(i).map_or("", |id| cube.label(*id));
                    if l.is_empty() {
                        NONE.to_owned()
                    } else {
                        l.to_owned()
                    }
                })
                .collect();
            let e = combos.entry(combo).or_default();
            *e = e.saturating_add(v);
        }
    }
    let combinations = combos.len();
    let mut order: Vec<(Vec<String>, u64)> = combos.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut folded: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for (i, (combo, v)) in order.into_iter().enumerate() {
        let combo = if i < top {
            combo
        } else {
            vec![OTHER.to_owned(); dims.len()]
        };
        *folded.entry(combo).or_default() += v;
    }
    let node_name = |d: Dim, v: &str| format!("{}: {v}", d.name());
    let mut node_totals: BTreeMap<(usize, String), u64> = BTreeMap::new();
    let mut link_totals: BTreeMap<(usize, String, String), u64> = BTreeMap::new();
    for (combo, v) in &folded {
        for (depth, (d, val)) in dims.iter().zip(combo).enumerate() {
            *node_totals.entry((depth, val.clone())).or_default() += v;
            if depth + 1 < dims.len() {
                let key = (
                    depth,
                    node_name(*d, val),
                    node_name(dims[depth + 1], &combo[depth + 1]),
                );
                *link_totals.entry(key).or_default() += v;
            }
        }
    }
    let mut nodes: Vec<SankeyNode> = node_totals
        .into_iter()
        .map(|((depth, value), total)| SankeyNode {
            name: node_name(dims[depth], &value),
            dimension: dims[depth].name(),
            value,
            depth,
            total,
        })
        .collect();
    nodes.sort_by(|a, b| (a.depth, b.total, &a.value).cmp(&(b.depth, a.total, &b.value)));
    let mut links: Vec<(usize, SankeyLink)> = link_totals
        .into_iter()
        .map(|((depth, source, target), value)| {
            (
                depth,
                SankeyLink {
                    source,
                    target,
                    value,
                },
            )
        })
        .collect();
    links.sort_by(|a, b| {
        (a.0, b.1.value, &a.1.source, &a.1.target).cmp(&(b.0, a.1.value, &b.1.source, &b.1.target))
    });
    Sankey {
        nodes,
        links: links.into_iter().map(|(_, l)| l).collect(),
        total,
        combinations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cube::{CubeBuilder, TrafficQuery},
        fact::{Counts, End, Role},
        time::TimeRange,
    };

    #[test]
    fn columns_links_and_other() {
        let dims = [Dim::Container, Dim::Peer];
        let q = TrafficQuery::new(TimeRange { from: 0, to: 10 }, 10, &dims, None);
        let mut b = CubeBuilder::new(&q);
        for (c, p, bytes) in [
            ("web", "db", 100u64),
            ("web", "1.1.1.1", 50),
            ("job", "db", 10),
            ("job", "9.9.9.9", 1),
        ] {
            b.add_end(&End {
                ts: 1,
                host: "h",
                proto: "tcp",
                container: c,
                process: "p",
                user: "u",
                role: Role::Client,
                peer: p,
                peer_local: None,
                server_port: None,
                raw: None,
                sent: Counts { bytes, packets: 1 },
                received: Counts::default(),
                conversations: 1,
            });
        }
        let s = sankey(&b.finish().unwrap(), &dims, Unit::Bytes, 3);
        assert_eq!(s.total, 161);
        assert_eq!(s.combinations, 4);
        let names: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "container: web",
                "container: job",
                "container: Other",
                "peer: db",
                "peer: 1.1.1.1",
                "peer: Other"
            ]
        );
        assert_eq!(s.links[0].source, "container: web");
        assert_eq!(s.links[0].target, "peer: db");
        assert_eq!(s.links[0].value, 100);
        assert_eq!(s.links.iter().map(|l| l.value).sum::<u64>(), 161);
    }
}
