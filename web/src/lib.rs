//! flowlens web flow explorer. The HTTP UI arrives with its own issue; for now
//! this crate only names the record type the UI will serve.

pub use flowlens_correlator::types::Role;
