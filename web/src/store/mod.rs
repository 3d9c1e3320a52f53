//! The questions the API asks, answered by one trait with two
//! implementations: the embedded store ([`embedded`]: the live window of
//! conversation records in memory, rollups and health history in SQLite) and
//! InfluxDB ([`influx`]: InfluxQL over `/query`). Both feed the same pure
//! aggregation of `flowlens-query`, so they give the same rows.

pub mod disk;
pub mod embedded;
pub mod influx;
pub mod live;

use flowlens_query::{
    conversations::ConversationBuilder,
    cube::{Cube, TooManyGroups, TrafficQuery},
    field::Field,
    plan::{Capabilities, Source},
    time::TimeRange,
};
use serde::Serialize;

use crate::metrics::Sample;

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// InfluxDB refused the query or could not be reached.
    #[error("InfluxDB: {0}")]
    Influx(String),
    /// The store cannot answer now (e.g. its file is being recovered).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Too many groups.
    #[error(transparent)]
    TooManyGroups(#[from] TooManyGroups),
    /// The question would read more records than allowed.
    #[error("the question reads more than {limit} conversation records; narrow the time range or the filter")]
    TooMuchData {
        /// The limit.
        limit: usize,
    },
    /// Something else broke.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A traffic answer: the cube and how it was obtained.
#[derive(Debug)]
pub struct TrafficAnswer {
    /// The sums.
    pub cube: Cube,
    /// Which data answered.
    pub source: Source,
    /// What the user should know (partial coverage, a degraded store).
    pub notices: Vec<String>,
}

/// What a store can tell about itself.
#[derive(Clone, Debug, Serialize)]
pub struct StoreStatus {
    /// `embedded` or `influxdb`.
    pub kind: &'static str,
    /// Conversation records are available from this time on (Unix ns), when limited.
    pub records_from: Option<i64>,
    /// History (rollups) is kept this long, ns (None: as long as the database keeps it).
    pub retention_ns: Option<i64>,
    /// Free-form details (sizes, losses, last error).
    pub details: serde_json::Value,
}

/// The questions.
pub trait FlowStore: Send + Sync {
    /// What each source can filter and group by.
    fn capabilities(&self) -> Capabilities;

    /// Sums of ends for a traffic question.
    fn traffic(&self, q: &TrafficQuery) -> Result<TrafficAnswer, StoreError>;

    /// Feeds the records of the builder's range into it; returns notices.
    fn conversations(&self, b: &mut ConversationBuilder) -> Result<Vec<String>, StoreError>;

    /// Values of a field seen in the range, with their bytes, largest first.
    fn values(&self, field: Field, range: TimeRange) -> Result<Vec<(String, u64)>, StoreError>;

    /// State for the API and the health page.
    fn status(&self) -> StoreStatus;

    /// The store's own counters, for `/metrics` and the health history.
    fn samples(&self, out: &mut Vec<Sample>);
}

/// Sorts values by bytes (largest first), then by text.
pub(crate) fn sort_values(v: &mut Vec<(String, u64)>) {
    v.retain(|(s, _)| !s.is_empty());
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}
