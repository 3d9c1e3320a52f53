//! Errors of the InfluxDB output: settings and start-up.

use std::{io, path::PathBuf};

use super::{http::RequestError, spool::SpoolError};

/// Errors of the InfluxDB output: settings and start-up.
#[derive(Debug, thiserror::Error)]
pub enum InfluxError {
    /// A setting is malformed or inconsistent.
    #[error("invalid InfluxDB setting {what}: {message}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// A secret file could not be read.
    #[error("cannot read the InfluxDB {what} file {path}")]
    SecretFile {
        /// "token" or "password".
        what: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// 401/403 at start-up.
    #[error("InfluxDB at {url} refused the credentials (HTTP {status}: {message}); {hint}")]
    AuthRefused {
        /// Base URL.
        url: String,
        /// Status.
        status: u16,
        /// Server message.
        message: String,
        /// What to check.
        hint: &'static str,
    },
    /// Something answers HTTP at the URL, but it is not InfluxDB (a web
    /// server, a proxy's error page): a wrong URL, not an outage.
    #[error(
        "{url} is not InfluxDB: {answer}; check --influx-url (InfluxDB answers GET /ping with 204)"
    )]
    NotInflux {
        /// Base URL.
        url: String,
        /// What it answered.
        answer: String,
    },
    /// The database or bucket does not exist.
    #[error("InfluxDB at {url} has no database/bucket \"{db}\" ({message}); create it, or pass --influx-create-db (v1)")]
    DatabaseMissing {
        /// Base URL.
        url: String,
        /// Name.
        db: String,
        /// Server message.
        message: String,
    },
    /// The retention policy does not exist.
    #[error("InfluxDB at {url}: retention policy \"{rp}\" of database \"{db}\" does not exist ({message})")]
    RetentionPolicyMissing {
        /// Base URL.
        url: String,
        /// Database.
        db: String,
        /// Retention policy.
        rp: String,
        /// Server message.
        message: String,
    },
    /// `CREATE DATABASE` failed.
    #[error("creating InfluxDB database \"{db}\" failed")]
    CreateDatabase {
        /// Name.
        db: String,
        /// Why.
        source: RequestError,
    },
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The writer thread could not be started.
    #[error("starting the InfluxDB writer thread: {0}")]
    Thread(io::Error),
}
