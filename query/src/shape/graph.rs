//! The topology graph: nodes are hosts, containers, processes and remote
//! endpoints; edges carry bytes (or packets) both ways. A host can be
//! expanded into its containers, a container into its processes.
//!
//! Each local end reports what it sent to and received from its peer. Traffic
//! between two local ends is reported by both (one's `out` is the other's
//! `in`); an edge direction takes the larger of the two reports, so a filter
//! that hides one side does not lose the traffic and both sides never add up.
//! The rollup names a local peer only by its container: an edge to a process of
//! an expanded container whose other side is a local container attaches to
//! that container's (expanded) node.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use serde::Serialize;

use super::Unit;
use crate::{cube::Cube, field::Dim};

/// The dimensions a graph cube must be grouped by, in this order.
pub const GRAPH_DIMS: [Dim; 4] = [Dim::Host, Dim::Container, Dim::Process, Dim::Peer];

/// Most node ids in an `expand` list.
pub const MAX_EXPAND: usize = 64;

/// What kind of node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A collector host.
    Host,
    /// A container (or `host` for processes outside containers).
    Container,
    /// A process (comm) in a container.
    Process,
    /// An address that is not a local container.
    Remote,
}

/// A node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GraphNode {
    /// Stable id: `host:<h>`, `container:<h>/<c>`, `process:<h>/<c>/<comm>`, `remote:<addr>`.
    pub id: String,
    /// Kind.
    pub kind: NodeKind,
    /// Display label.
    pub label: String,
    /// The enclosing node (a container's host, a process's container).
    pub parent: Option<String>,
    /// Can be expanded one level (hosts and containers that are not yet).
    pub expandable: bool,
    /// Was expanded: its children are in the graph; edges whose far side is
    /// only known at this level still attach here.
    pub expanded: bool,
    /// Traffic on the node's kept edges, both ways, plus `internal`.
    pub value: u64,
    /// Traffic between ends inside the node (e.g. two containers of an unexpanded host).
    pub internal: u64,
}

/// An edge; `source` < `target` by id.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GraphEdge {
    /// One end's id.
    pub source: String,
    /// The other end's id.
    pub target: String,
    /// From source to target.
    pub forward: u64,
    /// From target to source.
    pub backward: u64,
    /// Both ways.
    pub value: u64,
}

/// The graph answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Graph {
    /// Nodes (kept edges' ends and their expanded parents).
    pub nodes: Vec<GraphNode>,
    /// The heaviest edges.
    pub edges: Vec<GraphEdge>,
    /// Edges before the cut to `max_edges`.
    pub edges_total: usize,
}

/// Checks an `expand` node id (`host:<h>` or `container:<h>/<c>`).
pub fn valid_expand(id: &str) -> bool {
    if id.len() > 512 || id.chars().any(char::is_control) {
        return false;
    }
    match id.split_once(':') {
        Some(("host", h)) => !h.is_empty() && !h.contains('/'),
        Some(("container", rest)) => {
            matches!(rest.split_once('/'), Some((h, c)) if !h.is_empty() && !c.is_empty() && !c.contains('/'))
        }
        _ => false,
    }
}

struct Place<'a> {
    host: &'a str,
    container: Option<&'a str>,
    process: Option<&'a str>,
}

fn node_of(p: &Place<'_>, expand: &BTreeSet<String>) -> (String, NodeKind) {
    let h = format!("host:{}", p.host);
    let Some(c) = p.container else {
        return (h, NodeKind::Host);
    };
    if !expand.contains(&h) {
        return (h, NodeKind::Host);
    }
    let cid = format!("container:{}/{c}", p.host);
    match p.process {
        Some(pr) if expand.contains(&cid) => {
            (format!("process:{}/{c}/{pr}", p.host), NodeKind::Process)
        }
        _ => (cid, NodeKind::Container),
    }
}

fn is_address(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Builds the graph from a cube grouped by [`GRAPH_DIMS`].
pub fn graph(cube: &Cube, unit: Unit, expand: &BTreeSet<String>, max_edges: usize) -> Graph {
    let idx = |d: Dim| cube.dims.iter().position(|x| *x == d);
    let (Some(hi), Some(ci), Some(pi), Some(peer_i)) = (
        idx(Dim::Host),
        idx(Dim::Container),
        idx(Dim::Process),
        idx(Dim::Peer),
    ) else {
        return Graph {
            nodes: vec![],
            edges: vec![],
            edges_total: 0,
        };
    };
    let pick = |c: &crate::cube::Cell, out: bool| -> u64 {
        match (unit, out) {
            (Unit::Packets, true) => c.out.packets,
            (Unit::Packets, false) => c.inn.packets,
            (Unit::Conversations, true) => c.conv_out,
            (Unit::Conversations, false) => c.conv_in,
            (Unit::Bytes, true) => c.out.bytes,
            (Unit::Bytes, false) => c.inn.bytes,
        }
    };
    // (from, to) -> (as reported by the sender, as reported by the receiver)
    let mut directed: HashMap<(String, String), (u64, u64)> = HashMap::new();
    let mut kinds: HashMap<String, (NodeKind, Option<String>)> = HashMap::new();
    for (k, cell) in &cube.cells {
        let (h, c, p, peer) = (
            cube.label(k.vals[hi]),
            cube.label(k.vals[ci]),
            cube.label(k.vals[pi]),
            cube.label(k.vals[peer_i]),
        );
        let local = Place {
            host: h,
            container: Some(c),
            process: Some(p),
        };
        let (l, lk) = node_of(&local, expand);
        kinds.entry(l.clone()).or_insert((lk, Some(p.to_owned())));
        let (r, rk) = if peer.is_empty() || is_address(peer) {
            (format!("remote:{peer}"), NodeKind::Remote)
        } else {
            node_of(
                &Place {
                    host: h,
                    container: Some(peer),
                    process: None,
                },
                expand,
            )
        };
        kinds.entry(r.clone()).or_insert((rk, None));
        let (out, inn) = (pick(cell, true), pick(cell, false));
        let e = directed.entry((l.clone(), r.clone())).or_default();
        e.0 = e.0.saturating_add(out);
        let e = directed.entry((r, l)).or_default();
        e.1 = e.1.saturating_add(inn);
    }
    let mut internal: BTreeMap<String, u64> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for ((from, to), (sender, receiver)) in directed {
        let v = sender.max(receiver);
        if v == 0 {
            continue;
        }
        if from == to {
            *internal.entry(from).or_default() += v;
            continue;
        }
        if from < to {
            pairs.entry((from, to)).or_default().0 += v;
        } else {
            pairs.entry((to, from)).or_default().1 += v;
        }
    }
    let mut edges: Vec<GraphEdge> = pairs
        .into_iter()
        .map(|((source, target), (forward, backward))| GraphEdge {
            source,
            target,
            forward,
            backward,
            value: forward.saturating_add(backward),
        })
        .collect();
    let edges_total = edges.len();
    edges.sort_by(|a, b| {
        b.value
            .cmp(&a.value)
            .then_with(|| (&a.source, &a.target).cmp(&(&b.source, &b.target)))
    });
    edges.truncate(max_edges);
    let mut value: BTreeMap<String, u64> = BTreeMap::new();
    for e in &edges {
        *value.entry(e.source.clone()).or_default() += e.value;
        *value.entry(e.target.clone()).or_default() += e.value;
    }
    for (n, v) in &internal {
        *value.entry(n.clone()).or_default() += v;
    }
    // Expanded parents of kept nodes.
    let mut ids: BTreeSet<String> = value.keys().cloned().collect();
    for id in value.keys() {
        let mut cur = parent_of(id);
        while let Some(p) = cur {
            cur = parent_of(&p);
            ids.insert(p);
        }
    }
    let nodes = ids
        .into_iter()
        .map(|id| {
            let kind = kinds.get(&id).map_or_else(|| kind_of(&id), |k| k.0);
            let label = id
                .rsplit_once('/')
                .map(|(_, l)| l.to_owned())
                .or_else(|| id.split_once(':').map(|(_, l)| l.to_owned()))
                .unwrap_or_else(|| id.clone());
            let expanded = expand.contains(&id);
            GraphNode {
                parent: parent_of(&id),
                expandable: matches!(kind, NodeKind::Host | NodeKind::Container) && !expanded,
                expanded,
                value: value.get(&id).copied().unwrap_or(0),
                internal: internal.get(&id).copied().unwrap_or(0),
                kind,
                label,
                id,
            }
        })
        .collect();
    Graph {
        nodes,
        edges,
        edges_total,
    }
}

fn kind_of(id: &str) -> NodeKind {
    match id.split_once(':').map(|(k, _)| k) {
        Some("host") => NodeKind::Host,
        Some("container") => NodeKind::Container,
        Some("process") => NodeKind::Process,
        _ => NodeKind::Remote,
    }
}

fn parent_of(id: &str) -> Option<String> {
    let (kind, rest) = id.split_once(':')?;
    match kind {
        "container" => rest.split_once('/').map(|(h, _)| format!("host:{h}")),
        "process" => {
            let mut it = rest.splitn(3, '/');
            let (h, c) = (it.next()?, it.next()?);
            Some(format!("container:{h}/{c}"))
        }
        _ => None,
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

    fn cube(
        rows: &[(&'static str, &'static str, &'static str, u64, u64)],
        filter: Option<&str>,
    ) -> Cube {
        let q = TrafficQuery::new(
            TimeRange { from: 0, to: 10 },
            10,
            &GRAPH_DIMS,
            filter.map(|f| crate::filter::parse(f).unwrap()),
        );
        let mut b = CubeBuilder::new(&q);
        for (c, p, peer, sent, recv) in rows {
            b.add_end(&End {
                ts: 1,
                host: "h1",
                proto: "tcp",
                container: c,
                process: p,
                user: "u",
                role: Role::Client,
                peer,
                peer_local: None,
                server_port: None,
                raw: None,
                sent: Counts {
                    bytes: *sent,
                    packets: 1,
                },
                received: Counts {
                    bytes: *recv,
                    packets: 1,
                },
                conversations: 1,
            });
        }
        b.finish().unwrap()
    }

    const ROWS: &[(&str, &str, &str, u64, u64)] = &[
        // web/nginx talks to db (a local container) and a remote client.
        ("web", "nginx", "db", 100, 1000),
        ("db", "postgres", "web", 1000, 100),
        ("web", "nginx", "203.0.113.7", 5000, 50),
    ];

    #[test]
    fn host_level_then_expanded() {
        let g = graph(&cube(ROWS, None), Unit::Bytes, &BTreeSet::new(), 100);
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, vec!["host:h1", "remote:203.0.113.7"]);
        assert_eq!(
            g.nodes[0].internal, 1100,
            "web<->db inside the host, counted once"
        );
        assert_eq!(g.edges.len(), 1);
        assert_eq!((g.edges[0].forward, g.edges[0].backward), (5000, 50));
        let expand: BTreeSet<String> = ["host:h1".to_owned()].into();
        let g = graph(&cube(ROWS, None), Unit::Bytes, &expand, 100);
        let e: Vec<(&str, &str, u64, u64)> = g
            .edges
            .iter()
            .map(|e| (e.source.as_str(), e.target.as_str(), e.forward, e.backward))
            .collect();
        assert_eq!(
            e,
            vec![
                ("container:h1/web", "remote:203.0.113.7", 5000, 50),
                ("container:h1/db", "container:h1/web", 1000, 100),
            ]
        );
        let host = g.nodes.iter().find(|n| n.id == "host:h1").unwrap();
        assert!(host.expanded && !host.expandable);
        let web = g.nodes.iter().find(|n| n.id == "container:h1/web").unwrap();
        assert_eq!(web.parent.as_deref(), Some("host:h1"));
        assert!(web.expandable);
    }

    #[test]
    fn a_filter_hiding_one_side_keeps_the_edge() {
        let expand: BTreeSet<String> = ["host:h1".to_owned()].into();
        let g = graph(
            &cube(ROWS, Some("container = web")),
            Unit::Bytes,
            &expand,
            100,
        );
        let db = g
            .edges
            .iter()
            .find(|e| e.source == "container:h1/db")
            .unwrap();
        assert_eq!((db.forward, db.backward), (1000, 100));
    }

    #[test]
    fn processes_and_the_edge_cut() {
        let expand: BTreeSet<String> = ["host:h1".to_owned(), "container:h1/web".to_owned()].into();
        let g = graph(&cube(ROWS, None), Unit::Bytes, &expand, 1);
        assert_eq!(g.edges_total, 3);
        assert_eq!(g.edges.len(), 1);
        assert_eq!(g.edges[0].source, "process:h1/web/nginx");
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "container:h1/web",
                "host:h1",
                "process:h1/web/nginx",
                "remote:203.0.113.7"
            ]
        );
        assert!(valid_expand("container:h1/web"));
        assert!(!valid_expand("process:h1/web/x"));
        assert!(!valid_expand("host:"));
        assert!(!valid_expand("container:h1/a/b"));
    }
}
