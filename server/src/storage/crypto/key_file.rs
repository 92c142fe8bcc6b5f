//! The master key file (`--encryption-key-file`): 32 raw bytes, or their
//! base64; mode 0600 or stricter. Loading refuses anything else with a
//! message naming the file; generating never overwrites one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::{DecodeError, Engine as _};
use zeroize::Zeroizing;

use super::aead::KEY_LEN;
use super::keys::KeyBytes;
use super::MasterKey;

/// Largest key file read. A key file is 32 bytes, or about 45 in base64; a
/// larger file is not a key file, and is refused without reading all of it.
const MAX_KEY_FILE_LEN: u64 = 1024;
/// Bytes of base64 for a key, with padding: 44 (and a newline in a file).
const KEY_BASE64_LEN: usize = KEY_LEN.div_ceil(3) * 4;

/// Errors of loading or generating a master key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be opened, read, created or synced.
    #[error("encryption key file {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file's permissions let group or others access it.
    #[error(
        "encryption key file {} has mode {mode:04o}, which gives group or others access; \
         it must be 0600 or stricter (chmod 600 {})",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a key.
    #[error(
        "encryption key file {}: {reason}; expected exactly 32 raw bytes or the base64 of 32 bytes",
        path.display()
    )]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its contents.
        reason: String,
    },
    /// [`MasterKey::generate_file`] found a file already there.
    #[error("encryption key file {} already exists; refusing to overwrite it", path.display())]
    Exists {
        /// The key file.
        path: PathBuf,
    },
    /// The operating system's random number generator failed.
    #[error(
        "encryption key file {}: the system random number generator failed",
        path.display()
    )]
    Rng {
        /// The key file that was to be generated.
        path: PathBuf,
    },
}

impl MasterKey {
    /// Loads the master key from a key file holding exactly 32 raw bytes, or
    /// the base64 (standard alphabet, padded or not, surrounding whitespace
    /// allowed) of 32 bytes. Refuses a file that group or others may access in
    /// any way (mode must be 0600 or stricter).
    pub fn load(path: impl AsRef<Path>) -> Result<MasterKey, KeyFileError> {
        let path = path.as_ref();
        let io_err = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let invalid = |reason: String| KeyFileError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io_err)?;
        // The mode of the file actually opened, not of whatever the path names
        // a moment later.
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(invalid("not a regular file".to_owned()));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        // Room for all that is read, so the buffer never moves (leaving a
        // copy of the key behind) before it is wiped.
        let mut contents = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut contents)
            .map_err(io_err)?;
        if contents.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(invalid(format!(
                "the file is larger than {MAX_KEY_FILE_LEN} bytes"
            )));
        }
        let key = parse_key_material(&contents).map_err(invalid)?;
        Ok(MasterKey::from_secret(key))
    }

    /// Generates a new random master key and writes it to a new key file
    /// (base64 and a newline), created with mode 0600 and synced, along with
    /// its directory. Fails if the file exists: a key file is never
    /// overwritten.
    pub fn generate_file(path: impl AsRef<Path>) -> Result<MasterKey, KeyFileError> {
        let path = path.as_ref();
        let io_err = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = KeyBytes::random().map_err(|_| KeyFileError::Rng {
            path: path.to_path_buf(),
        })?;
        let key = MasterKey::from_secret(bytes);

        // The mode is set at creation, so the key is never readable by others,
        // not even for an instant; the umask can only remove bits from it.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::AlreadyExists {
                    KeyFileError::Exists {
                        path: path.to_path_buf(),
                    }
                } else {
                    io_err(source)
                }
            })?;
        // Encoded straight into a buffer that is wiped (no intermediate copy).
        let mut text = Zeroizing::new([0u8; KEY_BASE64_LEN + 1]);
        let written = STANDARD
            .encode_slice(key.secret(), &mut text[..KEY_BASE64_LEN])
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|n| {
                text[n] = b'\n';
                file.write_all(&text[..=n])
            })
            .and_then(|()| file.sync_all());
        drop(file);
        if let Err(source) = written {
            // A partial key file would be refused by `load` and block the next
            // `generate_file`; remove it. The write error is the one to report.
            let _ = fs::remove_file(path);
            return Err(io_err(source));
        }
        sync_parent_dir(path).map_err(io_err)?;
        Ok(key)
    }
}

/// The key of a key file's contents: exactly 32 bytes are the raw key;
/// anything else must be base64 of 32 bytes, with surrounding whitespace
/// allowed.
fn parse_key_material(contents: &[u8]) -> Result<KeyBytes, String> {
    if let Ok(raw) = <&[u8; KEY_LEN]>::try_from(contents) {
        return Ok(KeyBytes::from_array(raw));
    }
    let text = contents.trim_ascii();
    if text.is_empty() {
        return Err(format!("the file is empty ({} bytes)", contents.len()));
    }
    let decoded = decode_base64(text).map_err(|e| {
        format!(
            "{} bytes, so not a raw key, and not valid base64 ({e})",
            contents.len()
        )
    })?;
    match <&[u8; KEY_LEN]>::try_from(decoded.as_slice()) {
        Ok(key) => Ok(KeyBytes::from_array(key)),
        Err(_) => Err(format!("the base64 decodes to {} bytes", decoded.len())),
    }
}

/// Decodes standard base64, padded or not. Strict: no characters outside the
/// alphabet (whitespace included), padding only at the end and only the right
/// amount, and unused trailing bits must be zero (one encoding per value).
/// The base64 crate's engines give exactly that: canonical padding when the
/// text ends with `=`, none otherwise (its "indifferent" mode would also take
/// too little padding). The output is wiped when dropped.
fn decode_base64(text: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let engine = if text.ends_with(b"=") {
        &STANDARD
    } else {
        &STANDARD_NO_PAD
    };
    // The crate sizes its output from the input's length: with this much
    // room the buffer never moves while it holds key bytes.
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() + 3));
    engine.decode_vec(text, &mut out).map_err(|e| match e {
        DecodeError::InvalidByte(offset, byte) => {
            format!(
                "invalid character {:?} at offset {offset}",
                char::from(byte)
            )
        }
        DecodeError::InvalidLength(len) => format!("impossible length {len}"),
        DecodeError::InvalidLastSymbol(..) => "non-zero trailing bits".to_owned(),
        DecodeError::InvalidPadding => "wrong amount of '=' padding".to_owned(),
    })?;
    Ok(out)
}

/// Syncs the directory holding `path`, so that a newly created file in it
/// survives a crash.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "key_file_tests.rs"]
mod tests;
