//! Configuration errors, phrased for the user.

use std::path::PathBuf;

use crate::influx::InfluxError;

/// A configuration error: names the setting and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read (the cause follows as its source).
    #[error("cannot read config file {path}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// An InfluxDB setting is malformed, or a secret file unreadable.
    #[error(transparent)]
    Influx(#[from] InfluxError),
}
