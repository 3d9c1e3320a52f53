//! Which data answers a question: the rollup when its labels suffice (cheap:
//! a few points per process and interval), the conversation records' tags
//! when ports are needed, the full records when addresses, pids or
//! executables are (Akvorado's trick).

use serde::Serialize;

use crate::field::{Field, FieldSet};

/// Where a traffic question is answered from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Per-process rollup rows (`flow_rollup`, or the embedded store's rollup table).
    Rollup,
    /// Conversation records grouped by their tags (`flow`, summed by InfluxDB).
    FlowTags,
    /// Conversation records one by one (`flow` with its fields, or the embedded live window).
    Records,
}

/// The fields each source of a store can filter and group by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Fields of the rollup (`None`: the store has no rollup).
    pub rollup: Option<FieldSet>,
    /// Fields of the records' tags (`None`: no such source).
    pub flow_tags: Option<FieldSet>,
}

/// Fields every rollup has (docs/schema.md).
pub fn base_rollup_fields() -> FieldSet {
    FieldSet::of(&[
        Field::Host,
        Field::Proto,
        Field::Container,
        Field::Process,
        Field::User,
        Field::Role,
        Field::Direction,
        Field::Peer,
    ])
}

/// Fields of the `flow` measurement's tags (seen from one local end).
pub fn flow_tag_fields() -> FieldSet {
    FieldSet::of(&[
        Field::Host,
        Field::Proto,
        Field::Container,
        Field::Process,
        Field::User,
        Field::Role,
        Field::Direction,
        Field::PeerLocal,
        Field::ServerPort,
    ])
}

impl Capabilities {
    /// The cheapest source that has every `needed` field.
    pub fn choose(&self, needed: FieldSet) -> Source {
        if self.rollup.is_some_and(|r| r.covers(needed)) {
            Source::Rollup
        } else if self.flow_tags.is_some_and(|t| t.covers(needed)) {
            Source::FlowTags
        } else {
            Source::Records
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cheapest_source_that_has_the_fields() {
        let influx = Capabilities {
            rollup: Some(base_rollup_fields()),
            flow_tags: Some(flow_tag_fields()),
        };
        let f = |v: &[Field]| FieldSet::of(v);
        assert_eq!(
            influx.choose(f(&[Field::Container, Field::Peer])),
            Source::Rollup
        );
        assert_eq!(
            influx.choose(f(&[Field::Container, Field::ServerPort])),
            Source::FlowTags
        );
        assert_eq!(
            influx.choose(f(&[Field::Peer, Field::ServerPort])),
            Source::Records
        );
        assert_eq!(influx.choose(f(&[Field::Addr])), Source::Records);
        assert_eq!(influx.choose(FieldSet::EMPTY), Source::Rollup);
        let embedded = Capabilities {
            rollup: Some(base_rollup_fields().union(f(&[Field::ServerPort, Field::PeerLocal]))),
            flow_tags: None,
        };
        assert_eq!(
            embedded.choose(f(&[Field::Peer, Field::ServerPort])),
            Source::Rollup
        );
        assert_eq!(embedded.choose(f(&[Field::Pid])), Source::Records);
    }
}
