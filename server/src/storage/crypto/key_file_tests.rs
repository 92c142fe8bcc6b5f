//! Key file tests: the accepted and refused forms, file modes, generation,
//! and the base64 decoder against the hand-written one it replaced.

use super::*;
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique path in the temporary directory (removed on drop).
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempPath(
            std::env::temp_dir().join(format!("cairn-seal-test-{}-{n}-{name}", std::process::id())),
        )
    }

    /// Writes `contents` and sets `mode`.
    fn write(name: &str, contents: &[u8], mode: u32) -> TempPath {
        let path = TempPath::new(name);
        fs::write(&path.0, contents).unwrap();
        fs::set_permissions(&path.0, fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn base64_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    decode_base64(text).map(|v| v.to_vec())
}

fn parsed(contents: &[u8]) -> Result<[u8; KEY_LEN], String> {
    parse_key_material(contents).map(|k| *k.get())
}

/// The hand-written decoder the base64 crate replaced, kept as the model of
/// what a key file may hold: the crate must accept and refuse exactly the same
/// texts, and decode them to the same bytes.
fn reference_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    let unpadded = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    if unpadded.len() != text.len() && !text.len().is_multiple_of(4) {
        return Err("padding".to_owned());
    }
    if unpadded.len() % 4 == 1 {
        return Err("length".to_owned());
    }
    let mut out = Vec::new();
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &c in unpadded {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err("character".to_owned()),
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if acc != 0 {
        return Err("trailing bits".to_owned());
    }
    Ok(out)
}

// ---- base64 ----

#[test]
fn base64_decodes_padded_and_unpadded() {
    assert_eq!(base64_decode(b"").unwrap(), b"");
    assert_eq!(base64_decode(b"Zg==").unwrap(), b"f");
    assert_eq!(base64_decode(b"Zg").unwrap(), b"f");
    assert_eq!(base64_decode(b"Zm8=").unwrap(), b"fo");
    assert_eq!(base64_decode(b"Zm8").unwrap(), b"fo");
    assert_eq!(base64_decode(b"Zm9v").unwrap(), b"foo");
    assert_eq!(base64_decode(b"Zm9vYmFy").unwrap(), b"foobar");
    assert_eq!(base64_decode(b"+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
}

#[test]
fn base64_rejects_bad_input() {
    for bad in [
        &b"Zm9v!"[..], // invalid character
        b"Zm 9v",      // inner whitespace
        b"Zm9v\n",     // whitespace is trimmed by the caller, not here
        b"Zm-_",       // URL-safe alphabet
        b"Z",          // impossible length
        b"Zm9vY",      // impossible length
        b"Zg=",        // too little padding
        b"Zg===",      // too much padding
        b"Zm8==",      // too much padding
        b"Z===",       // padding in place of data
        b"Zg==Zg==",   // padding in the middle
        b"Zh==",       // non-zero trailing bits
        b"Zm9=",       // non-zero trailing bits
    ] {
        assert!(
            base64_decode(bad).is_err(),
            "{:?} should be refused",
            String::from_utf8_lossy(bad)
        );
        assert!(reference_decode(bad).is_err());
    }
}

#[test]
fn base64_errors_say_what_is_wrong() {
    let err = base64_decode(b"Zm9v!").unwrap_err();
    assert_eq!(err, "invalid character '!' at offset 4");
    assert!(base64_decode(b"Zm9vY")
        .unwrap_err()
        .contains("impossible length"));
    assert!(base64_decode(b"Zh==")
        .unwrap_err()
        .contains("trailing bits"));
    assert!(base64_decode(b"Zg=").unwrap_err().contains("padding"));
}

#[test]
fn base64_round_trips() {
    for len in 0..70 {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        let text = base64_encode(&bytes);
        assert_eq!(text.len() % 4, 0);
        assert_eq!(base64_decode(text.as_bytes()).unwrap(), bytes);
        assert_eq!(
            base64_decode(text.trim_end_matches('=').as_bytes()).unwrap(),
            bytes
        );
    }
    assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
}

proptest! {
    /// Same accepted inputs as the hand-written decoder, same bytes out.
    #[test]
    fn prop_base64_matches_the_reference(text in "[A-Za-z0-9+/=_ \\n!-]{0,16}") {
        let ours = base64_decode(text.as_bytes());
        let reference = reference_decode(text.as_bytes());
        prop_assert_eq!(ours.is_ok(), reference.is_ok(), "{:?}: {:?} vs {:?}", text, ours, reference);
        if let (Ok(a), Ok(b)) = (ours, reference) {
            prop_assert_eq!(a, b);
        }
    }

    /// Valid base64, padded or not, with its last symbol's spare bits set or
    /// not: the cases where decoders differ most.
    #[test]
    fn prop_base64_valid_forms_match_the_reference(
        bytes in prop::collection::vec(any::<u8>(), 0..40),
        strip in any::<bool>(),
        flip in 0u8..4,
    ) {
        let mut text = base64_encode(&bytes).into_bytes();
        if strip {
            while text.last() == Some(&b'=') {
                text.pop();
            }
        }
        if let Some(i) = text.iter().rposition(|c| *c != b'=') {
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let pos = alphabet.iter().position(|c| *c == text[i]).unwrap();
            text[i] = alphabet[(pos ^ usize::from(flip)) & 63];
        }
        let ours = base64_decode(&text);
        let reference = reference_decode(&text);
        prop_assert_eq!(ours.is_ok(), reference.is_ok());
        if let (Ok(a), Ok(b)) = (ours, reference) {
            prop_assert_eq!(a, b);
        }
    }
}

// ---- key material: every accepted and refused form ----

#[test]
fn key_material_raw_or_base64() {
    let key: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
    let b64 = base64_encode(&key);
    assert_eq!(parsed(&key).unwrap(), key);
    assert_eq!(parsed(b64.as_bytes()).unwrap(), key);
    assert_eq!(parsed(format!("{b64}\n").as_bytes()).unwrap(), key);
    assert_eq!(
        parsed(format!("  \t{}\r\n\n", b64.trim_end_matches('=')).as_bytes()).unwrap(),
        key
    );
    // Wrong lengths, raw and base64.
    assert!(parsed(&key[..31]).is_err());
    assert!(parsed(&[0u8; 33]).is_err());
    let err = parsed(base64_encode(&key[..31]).as_bytes()).unwrap_err();
    assert!(err.contains("31 bytes"), "{err}");
    assert!(parsed(base64_encode(&[1u8; 33]).as_bytes()).is_err());
    assert!(parsed(b"").is_err());
    assert!(parsed(b"\n\n").is_err());
    let err = parsed(format!("{}*\n", &b64[..42]).as_bytes()).unwrap_err();
    assert!(err.contains("invalid character"), "{err}");
}

#[test]
fn key_material_exactly_32_bytes_is_raw_even_if_it_looks_like_text() {
    // 32 base64 characters would decode to 24 bytes: exactly 32 bytes is a
    // raw key, whatever its bytes (whitespace included).
    let text = *b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    assert_eq!(parsed(&text).unwrap(), text);
    let spaces = [b' '; 32];
    assert_eq!(parsed(&spaces).unwrap(), spaces);
    let mut newline_first = [7u8; 32];
    newline_first[0] = b'\n';
    assert_eq!(parsed(&newline_first).unwrap(), newline_first);
}

#[test]
fn key_material_refused_forms() {
    let key: [u8; 32] = std::array::from_fn(|i| 255 - i as u8);
    let b64 = base64_encode(&key);
    // A raw key with a trailing newline is 33 bytes: neither raw nor base64.
    let mut raw_newline = key.to_vec();
    raw_newline.push(b'\n');
    assert!(parsed(&raw_newline).is_err());
    // The URL-safe alphabet.
    let url_safe = b64.replace('+', "-").replace('/', "_");
    assert_ne!(
        url_safe, b64,
        "the key must use both alphabets' differing symbols"
    );
    assert!(parsed(url_safe.as_bytes()).is_err());
    // A line break inside the base64.
    let split = format!("{}\n{}\n", &b64[..20], &b64[20..]);
    assert!(parsed(split.as_bytes()).is_err());
    // Too much padding (none at all is fine), or bits set past the end.
    assert_eq!(parsed(format!("{}\n", &b64[..43]).as_bytes()).unwrap(), key);
    assert!(parsed(format!("{b64}=\n").as_bytes()).is_err());
    let mut trailing = b64.into_bytes();
    trailing[42] ^= 1; // the low bits of the last symbol are unused
    assert!(parsed(&trailing).is_err());
    // Hex is not accepted.
    assert!(parsed(crate::storage::crypto::hex(&key).as_bytes()).is_err());
}

// ---- key files ----

#[test]
fn load_accepts_0600_and_stricter() {
    let key: [u8; 32] = std::array::from_fn(|i| 200 - i as u8);
    let expected = MasterKey::from_bytes(key).fingerprint();
    for mode in [0o600, 0o400, 0o200, 0o000] {
        let raw = TempPath::write("raw", &key, mode);
        assert_eq!(MasterKey::load(&raw.0).unwrap().fingerprint(), expected);
        let b64 = TempPath::write("b64", format!("{}\n", base64_encode(&key)).as_bytes(), mode);
        assert_eq!(MasterKey::load(&b64.0).unwrap().fingerprint(), expected);
    }
}

#[test]
fn load_refuses_group_or_world_access() {
    let key = [9u8; 32];
    for mode in [
        0o644, 0o640, 0o604, 0o610, 0o601, 0o660, 0o666, 0o777, 0o620,
    ] {
        let file = TempPath::write("loose", &key, mode);
        let err = MasterKey::load(&file.0).unwrap_err();
        assert!(
            matches!(err, KeyFileError::Permissions { mode: m, .. } if m == mode),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&file.0.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
        assert!(msg.contains("0600"), "{msg}");
    }
}

#[test]
fn load_refuses_wrong_length_naming_the_path() {
    for contents in [
        &[1u8; 31][..],
        &[1u8; 33][..],
        b"",
        base64_encode(&[1u8; 16]).as_bytes(),
    ] {
        let file = TempPath::write("short", contents, 0o600);
        let err = MasterKey::load(&file.0).unwrap_err();
        assert!(matches!(err, KeyFileError::Invalid { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&file.0.display().to_string()), "{msg}");
        assert!(msg.contains("32 raw bytes"), "{msg}");
    }
    let big = TempPath::write("big", &vec![b'A'; 5000], 0o600);
    assert!(matches!(
        MasterKey::load(&big.0),
        Err(KeyFileError::Invalid { .. })
    ));
}

#[test]
fn load_refuses_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let err = MasterKey::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, KeyFileError::Invalid { reason, .. } if reason.contains("not a regular file")),
        "{err:?}"
    );
}

#[test]
fn load_reports_missing_file() {
    let missing = TempPath::new("missing");
    let err = MasterKey::load(&missing.0).unwrap_err();
    assert!(
        matches!(&err, KeyFileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    );
    assert!(err.to_string().contains(&missing.0.display().to_string()));
}

#[test]
fn generate_file_creates_0600_and_never_overwrites() {
    let path = TempPath::new("generated");
    let key = MasterKey::generate_file(&path.0).unwrap();
    let meta = fs::metadata(&path.0).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let contents = fs::read(&path.0).unwrap();
    assert_eq!(contents.len(), 45, "44 base64 characters and a newline");
    assert_eq!(contents.last(), Some(&b'\n'));
    assert_eq!(
        STANDARD.decode(&contents[..44]).unwrap(),
        key.secret(),
        "standard base64 of the key"
    );
    assert_eq!(
        MasterKey::load(&path.0).unwrap().fingerprint(),
        key.fingerprint()
    );

    let err = MasterKey::generate_file(&path.0).unwrap_err();
    assert!(matches!(err, KeyFileError::Exists { .. }), "{err:?}");
    assert_eq!(fs::read(&path.0).unwrap(), contents, "left untouched");

    let other = TempPath::new("generated");
    let key2 = MasterKey::generate_file(&other.0).unwrap();
    assert_ne!(key.fingerprint(), key2.fingerprint());
}
