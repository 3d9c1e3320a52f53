//! flowlens web flow explorer: the query API (`fn app(state) -> Router`),
//! the stores it reads (the embedded live store, InfluxDB), `/metrics`, and
//! the server that runs it on its own thread.

pub mod api;
pub mod assets;
pub mod health;
pub mod metrics;
pub mod store;

pub use api::{app, AppState, AppStateBuilder, Limits, Token};
pub mod server;
pub mod testdata;
