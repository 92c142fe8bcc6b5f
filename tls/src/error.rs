//! The TLS layer's errors: what is wrong with a file or a setting, said so
//! that an operator can fix it without reading the code.

use std::path::PathBuf;

/// Why TLS could not be set up (at start: the member's own files and flags).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file it is ("cert file", "key file", ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file was read but holds nothing usable.
    #[error("bad {what} {path}: {reason}")]
    Parse {
        /// Which file it is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate and key that do not belong together, an expired
    /// certificate, and the like.
    #[error("{0}")]
    Invalid(String),
    /// A flag value that is not one etcd accepts.
    #[error("{0}")]
    Setting(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating a certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing a generated certificate failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}
