//! etcd's auth tokens: the `--auth-token` setting and the JWT token provider
//! (etcd's `auth/jwt.go`, `auth/options.go`, and `decomposeOpts` /
//! `NewTokenProvider` of `auth/store.go`).
//!
//! `--auth-token` is `simple` (etcd's default: random tokens held in each
//! member's memory, not this module) or
//! `jwt,pub-key=FILE,priv-key=FILE,sign-method=METHOD,ttl=DURATION`: tokens
//! are JSON Web Tokens signed with the private key, carrying the claims
//! etcd writes (`{"exp":..,"revision":..,"username":..}`), so any member
//! with the key (or only the public key) checks them without shared state,
//! and a token etcd made with the same key is taken here and vice versa.
//!
//! Sign methods and keys (PEM files, as etcd reads them):
//!
//! | method             | private key                  | public key          |
//! |--------------------|------------------------------|---------------------|
//! | RS256/384/512, PS256/384/512 | RSA, PKCS#1 or PKCS#8 | SPKI or certificate |
//! | ES256, ES384       | EC (P-256/P-384), SEC1 or PKCS#8 | SPKI or certificate |
//! | EdDSA              | Ed25519, PKCS#8              | SPKI or certificate |
//! | HS256/384/512      | the file's bytes are the HMAC secret | (not used)  |
//!
//! EdDSA is etcd 3.6's (etcd 3.5.1 refuses it); ES512 is refused here
//! (`ring` has no P-521), as is a key of the wrong type or curve for the
//! method (etcd 3.5 would fail only when the first token is signed).
//! Given only `pub-key`, the provider verifies but refuses to assign
//! ([`JwtError::VerifyOnly`]), as etcd's does. With both keys, they must
//! be one pair ([`JwtError::KeyMismatch`]).
//!
//! Errors keep etcd's texts (`auth: invalid auth options`, `auth: missing
//! key data`, ...) with the reason etcd only logs appended. Tokens and keys
//! are never logged or put in an error.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo, X509Certificate};

use crate::duration::parse_go_duration;

/// etcd's `DefaultTTL`: a token's lifetime when `ttl` is not given.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// JWT's base64url: written without padding, read with or without it (as
/// Go's jwt-go pads before decoding).
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What `--auth-token` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSpec {
    /// `simple` (options after it are ignored, as by etcd).
    Simple,
    /// `jwt,...`.
    Jwt(JwtOptions),
}

/// The options of `--auth-token jwt,...` (files not read yet: [`Jwt::new`]
/// reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtOptions {
    /// `sign-method`: required, etcd has no default.
    pub sign_method: SignMethod,
    /// `pub-key`: verifies tokens; alone, makes a verify-only provider.
    pub pub_key: Option<PathBuf>,
    /// `priv-key`: signs tokens (for HS*, the HMAC secret itself).
    pub priv_key: Option<PathBuf>,
    /// `ttl`: how long a token is valid after it is assigned
    /// ([`DEFAULT_TTL`] when absent or empty).
    pub ttl: Duration,
    /// Option names etcd does not know, which it accepts with a warning
    /// ("unknown JWT options"); kept so that the caller can warn too.
    pub unknown: Vec<String>,
}

/// A JWT `alg`, as `sign-method` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMethod {
    /// HMAC SHA-256.
    Hs256,
    /// HMAC SHA-384.
    Hs384,
    /// HMAC SHA-512.
    Hs512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    Rs512,
    /// RSASSA-PSS SHA-256 (salt as long as the hash).
    Ps256,
    /// RSASSA-PSS SHA-384.
    Ps384,
    /// RSASSA-PSS SHA-512.
    Ps512,
    /// ECDSA P-256 SHA-256 (r || s).
    Es256,
    /// ECDSA P-384 SHA-384 (r || s).
    Es384,
    /// ECDSA P-521 SHA-512: parsed, but refused by [`Jwt::new`].
    Es512,
    /// Ed25519.
    EdDsa,
}

/// Every method and its JWT `alg` name (the `sign-method` value).
const NAMES: [(SignMethod, &str); 13] = [
    (SignMethod::Hs256, "HS256"),
    (SignMethod::Hs384, "HS384"),
    (SignMethod::Hs512, "HS512"),
    (SignMethod::Rs256, "RS256"),
    (SignMethod::Rs384, "RS384"),
    (SignMethod::Rs512, "RS512"),
    (SignMethod::Ps256, "PS256"),
    (SignMethod::Ps384, "PS384"),
    (SignMethod::Ps512, "PS512"),
    (SignMethod::Es256, "ES256"),
    (SignMethod::Es384, "ES384"),
    (SignMethod::Es512, "ES512"),
    (SignMethod::EdDsa, "EdDSA"),
];

impl SignMethod {
    /// The JWT `alg` name (and `sign-method` value).
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(m, _)| *m == self)
            .map_or("", |(_, name)| name)
    }

    /// The method named `name` (case-sensitive, as jwt-go's registry).
    pub fn from_name(name: &str) -> Option<SignMethod> {
        NAMES.iter().find(|(_, n)| *n == name).map(|(m, _)| *m)
    }

    /// RS* and PS*: an RSA key.
    fn is_rsa(self) -> bool {
        use SignMethod::*;
        matches!(self, Rs256 | Rs384 | Rs512 | Ps256 | Ps384 | Ps512)
    }
}

/// Why a token spec, a key or a signature failed.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// etcd's `ErrInvalidAuthOpts`, with the reason etcd only logs: a
    /// malformed option, an unknown token type or sign method, a bad
    /// `ttl`, an unreadable key file.
    #[error("auth: invalid auth options: {0}")]
    InvalidOptions(String),
    /// etcd's `ErrMissingKey`: no key for the method.
    #[error("auth: missing key data")]
    MissingKey,
    /// etcd's `ErrKeyMismatch`: `pub-key` is not `priv-key`'s public half.
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    /// A key file that is not a usable key for the method.
    #[error("auth: {which} key {path}: {reason}")]
    BadKey {
        /// "private" or "public".
        which: &'static str,
        /// The file, as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A sign method Cairn cannot use (ES512: `ring` has no P-521).
    #[error("auth: sign method {0} is not supported")]
    Unsupported(&'static str),
    /// etcd's `ErrVerifyOnly`: only `pub-key` was given.
    #[error("auth: token signing attempted with verify-only key")]
    VerifyOnly,
    /// The signature could not be made (the system's random source failed).
    #[error("auth: failed to sign a JWT token")]
    Sign,
}

/// Parses `--auth-token` as etcd's `decomposeOpts` and `NewTokenProvider`:
/// comma-separated, the token type first, then `name=value` options, none
/// repeated. (etcd takes an empty value as "no token provider", with
/// which nobody can authenticate; Cairn refuses it.)
pub fn parse_spec(s: &str) -> Result<TokenSpec, JwtError> {
    let mut parts = s.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut options: Vec<(&str, &str)> = Vec::new();
    for part in parts {
        let mut pair = part.split('=');
        let (Some(name), Some(value), None) = (pair.next(), pair.next(), pair.next()) else {
            return Err(JwtError::InvalidOptions(format!(
                "invalid token option {part:?} (name=value)"
            )));
        };
        if options.iter().any(|(seen, _)| *seen == name) {
            return Err(JwtError::InvalidOptions(format!(
                "token option {name:?} given twice"
            )));
        }
        options.push((name, value));
    }
    match kind {
        "simple" => Ok(TokenSpec::Simple),
        "jwt" => jwt_options(&options).map(TokenSpec::Jwt),
        "" => Err(JwtError::InvalidOptions(
            "no token type (\"simple\" or \"jwt,...\")".into(),
        )),
        other => Err(JwtError::InvalidOptions(format!(
            "unknown token type {other:?}"
        ))),
    }
}

/// etcd's `jwtOptions.ParseWithDefaults`, files left unread.
fn jwt_options(options: &[(&str, &str)]) -> Result<JwtOptions, JwtError> {
    let get = |name: &str| {
        options
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_empty())
    };
    let ttl = match get("ttl") {
        None => DEFAULT_TTL,
        Some(ttl) => parse_go_duration(ttl).map_err(JwtError::InvalidOptions)?,
    };
    let method = get("sign-method").unwrap_or_default();
    let sign_method = SignMethod::from_name(method).ok_or_else(|| {
        JwtError::InvalidOptions(format!("auth: invalid auth signature method {method:?}"))
    })?;
    let known = ["sign-method", "pub-key", "priv-key", "ttl"];
    Ok(JwtOptions {
        sign_method,
        pub_key: get("pub-key").map(PathBuf::from),
        priv_key: get("priv-key").map(PathBuf::from),
        ttl,
        unknown: options
            .iter()
            .map(|(name, _)| name.to_string())
            .filter(|name| !known.contains(&name.as_str()))
            .collect(),
    })
}

/// The JWT token provider: assigns signed tokens and checks them.
pub struct Jwt {
    /// The `alg` of every token made and the only one accepted (a token
    /// naming another is refused: no algorithm confusion).
    method: SignMethod,
    /// The signing key; `None` for a verify-only provider.
    signer: Option<Signer>,
    /// The key tokens are checked with.
    verifier: Verifier,
    /// A token's lifetime.
    ttl: Duration,
    /// ECDSA and RSA-PSS signatures are randomised.
    rng: SystemRandom,
}

impl std::fmt::Debug for Jwt {
    /// Method, TTL and whether it signs; never key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("method", &self.method.name())
            .field("verify_only", &self.signer.is_none())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A private key, by family.
enum Signer {
    /// HMAC: the same key signs and verifies.
    Hmac(hmac::Key),
    /// RSA, with the padding of the method.
    Rsa(signature::RsaKeyPair, &'static dyn signature::RsaEncoding),
    /// ECDSA, fixed-length r || s.
    Ecdsa(signature::EcdsaKeyPair),
    /// Ed25519.
    Ed25519(signature::Ed25519KeyPair),
}

/// A verification key, by family.
enum Verifier {
    /// HMAC: tags are compared in constant time.
    Hmac(hmac::Key),
    /// A public key (PKCS#1 RSAPublicKey, an uncompressed EC point, or 32
    /// Ed25519 bytes) and its algorithm.
    Public(&'static dyn signature::VerificationAlgorithm, Vec<u8>),
}

/// Reads a key file, with etcd's error for one that cannot be read.
fn read_key(path: &Path) -> Result<Vec<u8>, JwtError> {
    std::fs::read(path)
        .map_err(|e| JwtError::InvalidOptions(format!("open {}: {e}", path.display())))
}

/// The first PEM section of a key file.
fn pem(which: &'static str, path: &Path, bytes: &[u8]) -> Result<(SectionKind, Vec<u8>), JwtError> {
    <(SectionKind, Vec<u8>)>::from_pem_slice(bytes)
        .map_err(|e| bad(which, path, format!("not PEM: {e}")))
}

fn bad(which: &'static str, path: &Path, reason: impl Into<String>) -> JwtError {
    JwtError::BadKey {
        which,
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The key bytes of a PEM public key (`PUBLIC KEY`, or a certificate's, as
/// jwt-go also takes) if its algorithm has object identifier `oid`.
fn public_key(path: &Path, oid: &str) -> Result<Vec<u8>, JwtError> {
    let bytes = read_key(path)?;
    let (kind, der) = pem("public", path, &bytes)?;
    let key = |spki: &SubjectPublicKeyInfo<'_>| {
        let found = spki.algorithm.algorithm.to_id_string();
        if found == oid {
            Ok(spki.subject_public_key.data.to_vec())
        } else {
            Err(bad("public", path, format!("algorithm {found}, not {oid}")))
        }
    };
    match kind {
        SectionKind::PublicKey => match SubjectPublicKeyInfo::from_der(&der) {
            Ok((_, spki)) => key(&spki),
            Err(e) => Err(bad("public", path, e.to_string())),
        },
        SectionKind::Certificate => match X509Certificate::from_der(&der) {
            Ok((_, cert)) => key(cert.public_key()),
            Err(e) => Err(bad("public", path, e.to_string())),
        },
        _ => Err(bad("public", path, "not a PUBLIC KEY or CERTIFICATE")),
    }
}

/// Object identifiers of the public key algorithms.
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_ED25519: &str = "1.3.101.112";

/// DER of a curve's object identifier (the parameters of an EC key).
const P256_OID_DER: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID_DER: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const EC_OID_DER: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// A DER element: tag, length, contents.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// A SEC1 `EC PRIVATE KEY` wrapped as the PKCS#8 document `ring` reads.
fn sec1_to_pkcs8(sec1: &[u8], curve_oid: &[u8]) -> Vec<u8> {
    let algorithm = der(0x30, &[EC_OID_DER, curve_oid].concat());
    let body = [&der(0x02, &[0])[..], &algorithm, &der(0x04, sec1)].concat();
    der(0x30, &body)
}

/// The verification algorithm of a method that has a public key (RSA keys
/// of 2048 to 8192 bits).
fn verification(method: SignMethod) -> &'static dyn signature::VerificationAlgorithm {
    use SignMethod::*;
    match method {
        Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
        Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
        Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        Es256 => &signature::ECDSA_P256_SHA256_FIXED,
        Es384 => &signature::ECDSA_P384_SHA384_FIXED,
        EdDsa => &signature::ED25519,
        _ => &signature::RSA_PKCS1_2048_8192_SHA256,
    }
}

/// The RSA padding of a method.
fn rsa_encoding(method: SignMethod) -> &'static dyn signature::RsaEncoding {
    match method {
        SignMethod::Rs384 => &signature::RSA_PKCS1_SHA384,
        SignMethod::Rs512 => &signature::RSA_PKCS1_SHA512,
        SignMethod::Ps256 => &signature::RSA_PSS_SHA256,
        SignMethod::Ps384 => &signature::RSA_PSS_SHA384,
        SignMethod::Ps512 => &signature::RSA_PSS_SHA512,
        _ => &signature::RSA_PKCS1_SHA256,
    }
}

/// ES256 or ES384: signing algorithm, curve (DER object identifier) and
/// the length of an uncompressed public point.
fn ec_params(
    method: SignMethod,
) -> (
    &'static signature::EcdsaSigningAlgorithm,
    &'static [u8],
    usize,
) {
    if method == SignMethod::Es256 {
        (
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            P256_OID_DER,
            65,
        )
    } else {
        (
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            P384_OID_DER,
            97,
        )
    }
}

/// The signer of a private key file for `method` (not HMAC), and its
/// public key's bytes.
fn signer(
    method: SignMethod,
    path: &Path,
    rng: &SystemRandom,
) -> Result<(Signer, Vec<u8>), JwtError> {
    let (kind, der) = pem("private", path, &read_key(path)?)?;
    let rejected = |e: ring::error::KeyRejected| {
        bad(
            "private",
            path,
            format!("not a usable {} key: {e}", method.name()),
        )
    };
    let pkcs8 = matches!(kind, SectionKind::PrivateKey);
    match method {
        m if m.is_rsa() && (pkcs8 || matches!(kind, SectionKind::RsaPrivateKey)) => {
            let key = if pkcs8 {
                signature::RsaKeyPair::from_pkcs8(&der)
            } else {
                signature::RsaKeyPair::from_der(&der)
            }
            .map_err(rejected)?;
            let public = key.public().as_ref().to_vec();
            Ok((Signer::Rsa(key, rsa_encoding(m)), public))
        }
        SignMethod::Es256 | SignMethod::Es384
            if pkcs8 || matches!(kind, SectionKind::EcPrivateKey) =>
        {
            let (algorithm, curve, _) = ec_params(method);
            let der = if pkcs8 {
                der
            } else {
                sec1_to_pkcs8(&der, curve)
            };
            let key =
                signature::EcdsaKeyPair::from_pkcs8(algorithm, &der, rng).map_err(rejected)?;
            let public = key.public_key().as_ref().to_vec();
            Ok((Signer::Ecdsa(key), public))
        }
        SignMethod::EdDsa if pkcs8 => {
            let key =
                signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(rejected)?;
            let public = key.public_key().as_ref().to_vec();
            Ok((Signer::Ed25519(key), public))
        }
        _ => Err(bad(
            "private",
            path,
            format!("not a private key for {}", method.name()),
        )),
    }
}

/// The public key bytes of a public key file for `method` (not HMAC).
fn public(method: SignMethod, path: &Path) -> Result<Vec<u8>, JwtError> {
    match method {
        m if m.is_rsa() => public_key(path, OID_RSA),
        SignMethod::Es256 | SignMethod::Es384 => {
            let point = public_key(path, OID_EC)?;
            let (_, _, len) = ec_params(method);
            if point.len() != len || point.first() != Some(&4) {
                let reason = format!("not an uncompressed point of {}'s curve", method.name());
                return Err(bad("public", path, reason));
            }
            Ok(point)
        }
        _ => public_key(path, OID_ED25519),
    }
}

impl Jwt {
    /// A provider for `options`: reads and checks the key files.
    pub fn new(options: &JwtOptions) -> Result<Jwt, JwtError> {
        let method = options.sign_method;
        let rng = SystemRandom::new();
        let (signer, verifier) = match method {
            SignMethod::Hs256 | SignMethod::Hs384 | SignMethod::Hs512 => {
                let algorithm = match method {
                    SignMethod::Hs384 => hmac::HMAC_SHA384,
                    SignMethod::Hs512 => hmac::HMAC_SHA512,
                    _ => hmac::HMAC_SHA256,
                };
                let path = options.priv_key.as_deref().ok_or(JwtError::MissingKey)?;
                let key = hmac::Key::new(algorithm, &read_key(path)?);
                (Some(Signer::Hmac(key.clone())), Verifier::Hmac(key))
            }
            SignMethod::Es512 => return Err(JwtError::Unsupported("ES512")),
            _ => {
                let private = options.priv_key.as_deref();
                let signer = private.map(|p| signer(method, p, &rng)).transpose()?;
                let public = options.pub_key.as_deref();
                let public = public.map(|p| self::public(method, p)).transpose()?;
                let algorithm = verification(method);
                match (signer, public) {
                    (None, None) => return Err(JwtError::MissingKey),
                    (Some((_, mine)), Some(given)) if mine != given => {
                        return Err(JwtError::KeyMismatch)
                    }
                    (Some((signer, mine)), _) => (Some(signer), Verifier::Public(algorithm, mine)),
                    (None, Some(given)) => (None, Verifier::Public(algorithm, given)),
                }
            }
        };
        Ok(Jwt {
            method,
            signer,
            verifier,
            ttl: options.ttl,
            rng,
        })
    }

    /// The sign method.
    pub fn method(&self) -> SignMethod {
        self.method
    }

    /// True when only a public key was given: [`Jwt::assign`] refuses.
    pub fn verify_only(&self) -> bool {
        self.signer.is_none()
    }

    /// A token for `user` at auth revision `revision`, valid for the TTL
    /// from now.
    pub fn assign(&self, user: &str, revision: u64) -> Result<String, JwtError> {
        self.assign_at(user, revision, unix_now())
    }

    /// [`Jwt::assign`] at `now` (Unix seconds).
    pub fn assign_at(&self, user: &str, revision: u64, now: u64) -> Result<String, JwtError> {
        let signer = self.signer.as_ref().ok_or(JwtError::VerifyOnly)?;
        let exp = now.saturating_add(self.ttl.as_secs());
        // etcd's claims, in the order Go writes a map (sorted keys).
        let user = serde_json::Value::from(user);
        let claims = format!(r#"{{"exp":{exp},"revision":{revision},"username":{user}}}"#);
        let header = format!(r#"{{"alg":"{}","typ":"JWT"}}"#, self.method.name());
        let signed = format!("{}.{}", B64.encode(header), B64.encode(claims));
        let signature = match signer {
            Signer::Hmac(key) => hmac::sign(key, signed.as_bytes()).as_ref().to_vec(),
            Signer::Rsa(key, encoding) => {
                let mut out = vec![0; key.public().modulus_len()];
                key.sign(*encoding, &self.rng, signed.as_bytes(), &mut out)
                    .map_err(|_| JwtError::Sign)?;
                out
            }
            Signer::Ecdsa(key) => key
                .sign(&self.rng, signed.as_bytes())
                .map_err(|_| JwtError::Sign)?
                .as_ref()
                .to_vec(),
            Signer::Ed25519(key) => key.sign(signed.as_bytes()).as_ref().to_vec(),
        };
        Ok(format!("{signed}.{}", B64.encode(signature)))
    }

    /// The user and auth revision of a valid token; `None` if it is
    /// malformed, signed with another key or method, or expired.
    pub fn info(&self, token: &str) -> Option<(String, u64)> {
        self.info_at(token, unix_now())
    }

    /// [`Jwt::info`] at `now` (Unix seconds). As jwt-go, a token is valid
    /// through its `exp` second, and not before its `nbf` or `iat` if it
    /// has them; unlike jwt-go, a token without `exp` is refused (etcd
    /// always writes one).
    pub fn info_at(&self, token: &str, now: u64) -> Option<(String, u64)> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let header: serde_json::Value = serde_json::from_slice(&B64.decode(header).ok()?).ok()?;
        if header.get("alg")?.as_str()? != self.method.name() {
            return None;
        }
        let sig = B64.decode(sig).ok()?;
        let signed = &token.as_bytes()[..token.len() - sig_len(token)];
        match &self.verifier {
            Verifier::Hmac(key) => hmac::verify(key, signed, &sig).ok()?,
            Verifier::Public(algorithm, key) => signature::UnparsedPublicKey::new(*algorithm, key)
                .verify(signed, &sig)
                .ok()?,
        }
        let claims: serde_json::Value = serde_json::from_slice(&B64.decode(claims).ok()?).ok()?;
        let seconds = |name: &str| claims.get(name).map(|v| v.as_f64().map(|f| f as i128));
        let now = i128::from(now);
        if seconds("exp")?? < now {
            return None;
        }
        for not_before in ["nbf", "iat"] {
            if let Some(at) = seconds(not_before) {
                if at? > now {
                    return None;
                }
            }
        }
        let user = claims.get("username")?.as_str()?.to_string();
        let revision = claims.get("revision")?;
        let revision = match revision.as_u64() {
            Some(r) => r,
            // Go reads every JSON number as a float64, then uint64(...).
            None => revision.as_f64().filter(|f| *f >= 0.0 && f.is_finite())? as u64,
        };
        Some((user, revision))
    }
}

/// The length of a token's last part (the signature) plus its dot.
fn sig_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

/// Seconds since the Unix epoch (0 on a clock before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
