//! Files re-read when they change: certificates, keys, CA bundles and CRLs
//! are looked at on every handshake, as etcd re-reads them per handshake,
//! so a renewal is picked up by the next connection without a restart.
//!
//! Unlike etcd, a change that does not load (a certificate renewed before
//! its key is, a file half written) does not fail handshakes: the last pair
//! that loaded stays in use, the problem is logged once, and the files are
//! tried again at the next handshake. That is what lets a renewal under
//! load fail no request.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use crate::TlsError;

/// What identifies one version of a file: modification time, size, inode
/// (a renewal by rename changes the inode even within one clock tick).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// How a value is built from its files.
type Build<T> = Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>;

/// A value built from files, built again when one of them changes.
pub struct Reloading<T> {
    /// The files the value is built from.
    files: Vec<PathBuf>,
    /// What the value is, for the log ("client certificate", ...).
    what: &'static str,
    /// Builds the value from the files.
    build: Build<T>,
    /// The stamps the current value was built from, the value, and the
    /// stamps of the last change that failed to load (logged once).
    state: Mutex<State<T>>,
}

struct State<T> {
    stamps: Vec<Stamp>,
    value: Arc<T>,
    failed: Option<Vec<Stamp>>,
}

impl<T> fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish()
    }
}

impl<T> Reloading<T> {
    /// Builds the value now (an error here is an error at start).
    pub fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = files.iter().map(|f| stamp(f)).collect();
        let value = Arc::new(build()?);
        Ok(Reloading {
            files,
            what,
            build: Box::new(build),
            state: Mutex::new(State {
                stamps,
                value,
                failed: None,
            }),
        })
    }

    /// The value for this handshake: rebuilt first if a file changed since
    /// it was built; the previous one if the change does not load.
    pub fn current(&self) -> Arc<T> {
        let stamps: Vec<Stamp> = self.files.iter().map(|f| stamp(f)).collect();
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.stamps == stamps {
            return Arc::clone(&state.value);
        }
        match (self.build)() {
            Ok(value) => {
                tracing::info!(what = self.what, files = ?self.files, "reloaded TLS files");
                state.value = Arc::new(value);
                state.stamps = stamps;
                state.failed = None;
            }
            Err(e) => {
                if state.failed.as_ref() != Some(&stamps) {
                    tracing::warn!(
                        what = self.what,
                        error = %e,
                        "changed TLS files do not load; the previous ones stay in use"
                    );
                    state.failed = Some(stamps);
                }
            }
        }
        Arc::clone(&state.value)
    }
}

/// A certificate and key, presented as a server (to clients) and as a
/// client (a member to its peers), reloaded when renewed.
#[derive(Debug)]
pub struct KeyPair {
    /// The chain and signing key.
    inner: Reloading<Arc<CertifiedKey>>,
}

impl KeyPair {
    /// The pair of `cert_file` and `key_file`, loaded now.
    pub fn new(
        cert_file: &Path,
        key_file: &Path,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let (cert, key, provider) = (
            cert_file.to_path_buf(),
            key_file.to_path_buf(),
            Arc::clone(provider),
        );
        let inner = Reloading::new("certificate", vec![cert.clone(), key.clone()], move || {
            crate::files::certified_key(&cert, &key, &provider)
        })?;
        Ok(KeyPair { inner })
    }

    /// The pair in use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.inner.current())
    }
}

impl ResolvesServerCert for KeyPair {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for KeyPair {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_change_is_loaded_once_and_a_bad_one_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "1").unwrap();
        let builds = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&builds);
        let file = path.clone();
        let r = Reloading::new("test", vec![path.clone()], move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let text = std::fs::read_to_string(&file).unwrap();
            text.trim()
                .parse::<u32>()
                .map_err(|e| TlsError::Invalid(e.to_string()))
        })
        .unwrap();
        // Unchanged: no rebuild.
        assert_eq!(*r.current(), 1);
        assert_eq!(*r.current(), 1);
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        // Changed (a new inode, as a renewal by rename makes): rebuilt once.
        let tmp = dir.path().join("f.new");
        std::fs::write(&tmp, "22").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(*r.current(), 22);
        assert_eq!(*r.current(), 22);
        assert_eq!(builds.load(Ordering::SeqCst), 2);
        // Half written: the last good value stays.
        let tmp = dir.path().join("f.bad");
        std::fs::write(&tmp, "x").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(*r.current(), 22);
        // Fixed: picked up.
        let tmp = dir.path().join("f.fixed");
        std::fs::write(&tmp, "333").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(*r.current(), 333);
    }
}
