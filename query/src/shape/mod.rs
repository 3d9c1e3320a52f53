//! The API's answers, computed from a [`Cube`](crate::cube::Cube) (or, for
//! the conversation list, from conversation records): the same code for both
//! stores.

pub mod graph;
pub mod sankey;
pub mod series;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    cube::{Cell, Cube, Key},
    field::Dim,
};

/// The name of the folded rest.
pub const OTHER: &str = "Other";
/// The name shown for an absent value (e.g. the server port of ICMP).
pub const NONE: &str = "(none)";

/// What a traffic question counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// L3 bytes (series: bytes per second).
    Bytes,
    /// Packets (series: packets per second).
    Packets,
    /// Conversation records: each local end of a conversation counts once per
    /// export interval in which it had traffic.
    Conversations,
}

impl Unit {
    /// Parses `bytes`, `packets`, `conversations`.
    pub fn parse(s: &str) -> Option<Unit> {
        match s {
            "bytes" => Some(Unit::Bytes),
            "packets" => Some(Unit::Packets),
            "conversations" => Some(Unit::Conversations),
            _ => None,
        }
    }

    /// Whether series values are per second.
    pub fn is_rate(self) -> bool {
        self != Unit::Conversations
    }

    /// The unit of series values.
    pub fn series_unit(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes/s",
            Unit::Packets => "packets/s",
            Unit::Conversations => "conversations",
        }
    }

    /// The unit of totals.
    pub fn total_unit(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Packets => "packets",
            Unit::Conversations => "conversations",
        }
    }
}

/// Which directions of a cell are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DirSel {
    /// Sent by the local end.
    Out,
    /// Received by the local end.
    In,
    /// Both.
    Both,
}

impl DirSel {
    /// `out` / `in` / none.
    pub fn name(self) -> Option<&'static str> {
        match self {
            DirSel::Out => Some("out"),
            DirSel::In => Some("in"),
            DirSel::Both => None,
        }
    }
}

/// A cell's value in a unit and direction selection.
pub fn cell_value(c: &Cell, unit: Unit, d: DirSel) -> u64 {
    match (unit, d) {
        (Unit::Bytes, DirSel::Out) => c.out.bytes,
        (Unit::Bytes, DirSel::In) => c.inn.bytes,
        (Unit::Bytes, DirSel::Both) => c.out.bytes.saturating_add(c.inn.bytes),
        (Unit::Packets, DirSel::Out) => c.out.packets,
        (Unit::Packets, DirSel::In) => c.inn.packets,
        (Unit::Packets, DirSel::Both) => c.out.packets.saturating_add(c.inn.packets),
        (Unit::Conversations, DirSel::Out) => c.conv_out,
        (Unit::Conversations, DirSel::In) => c.conv_in,
        (Unit::Conversations, DirSel::Both) => c.conv_any,
    }
}

/// A group's label texts (empty = absent), ordered like the cube's dims.
/// Ordered by text, so ties break the same way whatever store built the cube.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey(pub Vec<String>);

impl GroupKey {
    /// The labels of a cell key.
    pub fn of(cube: &Cube, k: &Key) -> Self {
        GroupKey(
            cube.dims
                .iter()
                .enumerate()
                .map(|(i, _)| cube.label(k.vals[i]).to_owned())
                .collect(),
        )
    }

    /// Labels joined with " / ".
    pub fn name(&self, _dims: &[Dim]) -> String {
        if self.0.is_empty() {
            return "total".to_owned();
        }
        self.0
            .iter()
            .map(|v| if v.is_empty() { NONE } else { v.as_str() })
            .collect::<Vec<_>>()
            .join(" / ")
    }

    /// Dimension name -> value (`None` when absent), for the dims the user asked for.
    pub fn dims_map(
        &self,
        cube_dims: &[Dim],
        asked: &[Dim],
    ) -> BTreeMap<&'static str, Option<String>> {
        cube_dims
            .iter()
            .zip(&self.0)
            .filter(|(d, _)| asked.contains(d))
            .map(|(d, v)| (d.name(), (!v.is_empty()).then(|| v.clone())))
            .collect()
    }
}
