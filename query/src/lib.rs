//! flowlens query logic, pure (no I/O, no threads, no clocks): the filter
//! language, the field allow-list, time ranges and buckets, the choice of the
//! data source (rollup or conversation records), InfluxQL generation with
//! escaped literals, and the aggregation that turns rows into the API's
//! answers. Both stores (embedded and InfluxDB) feed the same aggregation,
//! so they answer the same questions with the same rows.

pub mod complete;
pub mod conversations;
pub mod cube;
pub mod fact;
pub mod field;
pub mod filter;
pub mod influx_rows;
pub mod influxql;
pub mod plan;
pub mod shape;
pub mod time;
