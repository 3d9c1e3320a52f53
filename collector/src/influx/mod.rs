//! InfluxDB output: the schema (`schema`), cardinality caps (`cardinality`) and the line-protocol encoder
//! (`encode`) that turns each interval's conversation records into `flow` and `flow_rollup` points.
//! The schema is documented in docs/schema.md ("InfluxDB").

pub mod cardinality;
pub mod encode;
mod pending;
pub mod schema;
pub mod self_metrics;

// The writer side: HTTP, spool, settings and the sink (see sink.rs).
pub mod error;
pub mod flush;
pub mod http;
mod queue;
pub mod settings;
pub mod sink;
pub mod spool;
pub mod spool_dir;
pub mod stats;
pub mod writer;

pub use cardinality::CardinalityStats;
pub use encode::Encoder;
pub use error::InfluxError;
pub use schema::SchemaConfig;

/// Record builders and a line-protocol reader shared by the tests of this crate.
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
