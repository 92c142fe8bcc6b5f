//! The JWT token provider (`cairn_server::auth::jwt`): every sign method
//! round trip, tokens refused when tampered with, expired, of another
//! method or key; `--auth-token` parsing and key errors; and tokens that
//! etcd 3.5.1 assigned, verified here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use cairn_server::auth::jwt::{
    parse_spec, Jwt, JwtError, JwtOptions, SignMethod, TokenSpec, DEFAULT_TTL,
};
use ring::hmac;

/// Test keys (made with openssl) and tokens etcd 3.5.1 assigned with
/// them, in `server/tests/fixtures/jwt/`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn options(method: SignMethod, private: Option<&str>, public: Option<&str>) -> JwtOptions {
    JwtOptions {
        sign_method: method,
        pub_key: public.map(fixture),
        priv_key: private.map(fixture),
        ttl: DEFAULT_TTL,
        unknown: Vec::new(),
    }
}

/// (method, private key, public key) for every method Cairn signs with.
const KEYS: [(SignMethod, &str, Option<&str>); 12] = [
    (SignMethod::Hs256, "hmac.key", None),
    (SignMethod::Hs384, "hmac.key", None),
    (SignMethod::Hs512, "hmac.key", None),
    (SignMethod::Rs256, "rsa.pem", Some("rsa.pub")),
    (SignMethod::Rs384, "rsa-pkcs1.pem", Some("rsa-cert.pem")),
    (SignMethod::Rs512, "rsa.pem", Some("rsa.pub")),
    (SignMethod::Ps256, "rsa.pem", Some("rsa.pub")),
    (SignMethod::Ps384, "rsa-pkcs1.pem", Some("rsa.pub")),
    (SignMethod::Ps512, "rsa.pem", Some("rsa-cert.pem")),
    (SignMethod::Es256, "ec256.pem", Some("ec256.pub")),
    (SignMethod::Es384, "ec384.pem", Some("ec384.pub")),
    (SignMethod::EdDsa, "ed.pem", Some("ed.pub")),
];

const NOW: u64 = 1_800_000_000;

#[test]
fn spec_parsing() {
    assert_eq!(parse_spec("simple").unwrap(), TokenSpec::Simple);
    assert_eq!(parse_spec("simple,foo=bar").unwrap(), TokenSpec::Simple);
    let TokenSpec::Jwt(o) =
        parse_spec("jwt,pub-key=a.pub,priv-key=a.pem,sign-method=RS256,ttl=1m30s,x=1").unwrap()
    else {
        panic!("not jwt");
    };
    assert_eq!(o.sign_method, SignMethod::Rs256);
    assert_eq!(o.pub_key, Some(PathBuf::from("a.pub")));
    assert_eq!(o.priv_key, Some(PathBuf::from("a.pem")));
    assert_eq!(o.ttl, Duration::from_secs(90));
    assert_eq!(o.unknown, vec!["x".to_string()]);
    // Defaults; an empty value is no value.
    let TokenSpec::Jwt(o) = parse_spec("jwt,sign-method=EdDSA,pub-key=,ttl=").unwrap() else {
        panic!("not jwt");
    };
    assert_eq!((o.ttl, o.pub_key, o.priv_key), (DEFAULT_TTL, None, None));
    let TokenSpec::Jwt(o) = parse_spec("jwt,sign-method=ES512,ttl=0").unwrap() else {
        panic!("not jwt");
    };
    assert_eq!((o.sign_method, o.ttl), (SignMethod::Es512, Duration::ZERO));

    for (spec, reason) in [
        ("", "no token type"),
        ("foo", "unknown token type \"foo\""),
        ("JWT,sign-method=RS256", "unknown token type \"JWT\""),
        ("jwt,priv-key", "invalid token option \"priv-key\""),
        ("jwt,priv-key=a=b,sign-method=RS256", "invalid token option"),
        ("jwt,sign-method=RS256,sign-method=RS256", "given twice"),
        ("jwt", "invalid auth signature method \"\""),
        (
            "jwt,sign-method=rs256",
            "invalid auth signature method \"rs256\"",
        ),
        ("jwt,sign-method=none", "invalid auth signature method"),
        ("jwt,sign-method=RS256,ttl=5x", "invalid duration"),
    ] {
        let err = parse_spec(spec).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, JwtError::InvalidOptions(_)), "{spec}: {text}");
        assert!(
            text.starts_with("auth: invalid auth options: "),
            "{spec}: {text}"
        );
        assert!(text.contains(reason), "{spec}: {text}");
    }
}

#[test]
fn every_method_round_trips_and_verify_only_verifies() {
    for (method, private, public) in KEYS {
        let jwt = Jwt::new(&options(method, Some(private), public)).unwrap();
        assert!(!jwt.verify_only());
        let token = jwt.assign_at("alice", 7, NOW).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(
            jwt.info_at(&token, NOW),
            Some(("alice".into(), 7)),
            "{method:?}"
        );
        // Non-ASCII names survive the JSON.
        let token = jwt.assign_at("zoë \"q\"", 0, NOW).unwrap();
        assert_eq!(jwt.info_at(&token, NOW), Some(("zoë \"q\"".into(), 0)));
        if let Some(public) = public {
            let verifier = Jwt::new(&options(method, None, Some(public))).unwrap();
            assert!(verifier.verify_only());
            assert_eq!(verifier.info_at(&token, NOW + 1).map(|i| i.1), Some(0));
            assert!(matches!(
                verifier.assign_at("alice", 1, NOW),
                Err(JwtError::VerifyOnly)
            ));
        }
    }
    let es512 = Jwt::new(&options(SignMethod::Es512, Some("ec384.pem"), None));
    assert!(matches!(es512, Err(JwtError::Unsupported("ES512"))));
}

#[test]
fn claims_are_etcds() {
    let jwt = Jwt::new(&options(SignMethod::Hs256, Some("hmac.key"), None)).unwrap();
    let token = jwt.assign_at("root", 12, NOW).unwrap();
    let parts: Vec<Vec<u8>> = token.split('.').map(|p| B64.decode(p).unwrap()).collect();
    assert_eq!(parts[0], br#"{"alg":"HS256","typ":"JWT"}"#);
    let exp = NOW + 300;
    assert_eq!(
        String::from_utf8(parts[1].clone()).unwrap(),
        format!(r#"{{"exp":{exp},"revision":12,"username":"root"}}"#)
    );
    assert!(!token.contains('='), "unpadded base64url");
}

#[test]
fn expired_tampered_and_foreign_tokens_are_refused() {
    let jwt = Jwt::new(&options(SignMethod::Rs256, Some("rsa.pem"), None)).unwrap();
    let token = jwt.assign_at("alice", 3, NOW).unwrap();
    let exp = NOW + DEFAULT_TTL.as_secs();
    assert!(
        jwt.info_at(&token, exp).is_some(),
        "valid through its exp second"
    );
    assert_eq!(jwt.info_at(&token, exp + 1), None, "expired");

    let parts: Vec<&str> = token.split('.').collect();
    let forged_claims = B64.encode(format!(r#"{{"exp":{exp},"revision":3,"username":"root"}}"#));
    let forged = format!("{}.{forged_claims}.{}", parts[0], parts[2]);
    assert_eq!(jwt.info_at(&forged, NOW), None, "claims changed");
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig));
    assert_eq!(jwt.info_at(&bad_sig, NOW), None, "signature changed");
    for junk in [
        "",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        &format!("{token}.x"),
        &token[1..],
    ] {
        assert_eq!(jwt.info_at(junk, NOW), None, "{junk}");
    }

    // Another method with the same key, "none", another key: refused.
    let ps = Jwt::new(&options(SignMethod::Ps256, Some("rsa.pem"), None)).unwrap();
    assert_eq!(
        ps.info_at(&token, NOW),
        None,
        "alg RS256 given to a PS256 provider"
    );
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    assert_eq!(jwt.info_at(&none, NOW), None);
    let other = Jwt::new(&options(SignMethod::Rs256, Some("rsa-other.pem"), None)).unwrap();
    assert_eq!(other.info_at(&token, NOW), None, "another key");
    let hs = Jwt::new(&options(SignMethod::Hs256, Some("hmac.key"), None)).unwrap();
    let hs_token = hs.assign_at("alice", 3, NOW).unwrap();
    let mut hs_other = options(SignMethod::Hs256, Some("rsa.pub"), None);
    hs_other.ttl = Duration::ZERO;
    assert_eq!(Jwt::new(&hs_other).unwrap().info_at(&hs_token, NOW), None);

    // A TTL of 0: valid within the second it was made.
    let zero = Jwt::new(&hs_other).unwrap();
    let t = zero.assign_at("a", 1, NOW).unwrap();
    assert!(zero.info_at(&t, NOW).is_some() && zero.info_at(&t, NOW + 1).is_none());
}

#[test]
fn not_before_and_missing_claims() {
    let jwt = Jwt::new(&options(SignMethod::Hs256, Some("hmac.key"), None)).unwrap();
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"cairn-test-hmac-secret");
    let make = |claims: &str| {
        let signed = format!(
            "{}.{}",
            B64.encode(r#"{"alg":"HS256"}"#),
            B64.encode(claims)
        );
        let sig = B64.encode(hmac::sign(&key, signed.as_bytes()));
        format!("{signed}.{sig}")
    };
    let ok = make(r#"{"username":"u","revision":2.0,"exp":1900000000,"iat":1800000000}"#);
    assert_eq!(jwt.info_at(&ok, NOW), Some(("u".into(), 2)));
    assert_eq!(jwt.info_at(&ok, NOW - 1), None, "before iat");
    let nbf = make(r#"{"username":"u","revision":2,"exp":1900000000,"nbf":1800000001}"#);
    assert_eq!(jwt.info_at(&nbf, NOW), None);
    for claims in [
        r#"{"username":"u","revision":2}"#,
        r#"{"username":"u","exp":1900000000}"#,
        r#"{"revision":2,"exp":1900000000}"#,
        r#"{"username":7,"revision":2,"exp":1900000000}"#,
        r#"{"username":"u","revision":-1,"exp":1900000000}"#,
        r#"{"username":"u","revision":2,"exp":"1900000000"}"#,
        "not json",
    ] {
        assert_eq!(jwt.info_at(&make(claims), NOW), None, "{claims}");
    }
}

#[test]
fn key_errors() {
    let err = |o: JwtOptions| Jwt::new(&o).unwrap_err();
    for method in [
        SignMethod::Rs256,
        SignMethod::Es256,
        SignMethod::EdDsa,
        SignMethod::Hs256,
    ] {
        assert!(matches!(
            err(options(method, None, None)),
            JwtError::MissingKey
        ));
    }
    assert!(matches!(
        err(options(SignMethod::Hs256, None, Some("rsa.pub"))),
        JwtError::MissingKey
    ));
    let mismatch = [
        (SignMethod::Rs256, "rsa.pem", "rsa-other.pub"),
        (SignMethod::Es256, "ec256-pkcs8.pem", "ec384.pub"),
    ];
    for (method, private, public) in mismatch {
        let e = err(options(method, Some(private), Some(public)));
        assert!(
            matches!(e, JwtError::KeyMismatch | JwtError::BadKey { .. }),
            "{e}"
        );
    }
    let e = err(options(
        SignMethod::Rs256,
        Some("rsa.pem"),
        Some("rsa-other.pub"),
    ));
    assert_eq!(e.to_string(), "auth: public and private keys don't match");
    for (method, private, public) in [
        (SignMethod::Rs256, Some("ec256.pem"), None),
        (SignMethod::Es384, Some("ec256.pem"), None),
        (SignMethod::Es256, Some("ec384.pem"), None),
        (SignMethod::Es256, Some("rsa.pem"), None),
        (SignMethod::EdDsa, Some("rsa.pem"), None),
        (SignMethod::Rs256, None, Some("ec256.pub")),
        (SignMethod::Es256, None, Some("ec384.pub")),
        (SignMethod::EdDsa, None, Some("rsa.pub")),
        (SignMethod::Rs256, Some("hmac.key"), None),
    ] {
        let e = err(options(method, private, public));
        assert!(
            matches!(e, JwtError::BadKey { .. }),
            "{method:?} {private:?} {public:?}: {e}"
        );
    }
    let e = err(options(SignMethod::Rs256, Some("no-such-file.pem"), None));
    assert!(matches!(e, JwtError::InvalidOptions(_)), "{e}");
    assert!(e.to_string().contains("no-such-file.pem"), "{e}");
    // The error names the file, never its contents.
    let e = err(options(SignMethod::Rs256, Some("hmac.key"), None));
    assert!(!e.to_string().contains("cairn-test-hmac-secret"), "{e}");
}

/// Tokens etcd 3.5.1 assigned (`--auth-token jwt,priv-key=...,ttl=1h`,
/// user alice at auth revision 5) verify here, with the private key or
/// the public one, until they expire.
#[test]
fn etcd_tokens_verify() {
    let lines = std::fs::read_to_string(fixture("etcd-3.5.1-tokens.txt")).unwrap();
    let mut seen = 0;
    for line in lines.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [method, key, issued, token] = fields[..] else {
            panic!("bad fixture line {line:?}");
        };
        let method = SignMethod::from_name(method).unwrap();
        let issued: u64 = issued.parse().unwrap();
        let mut o = options(method, Some(key), None);
        o.ttl = Duration::from_secs(3600);
        let jwt = Jwt::new(&o).unwrap();
        assert_eq!(
            jwt.info_at(token, issued),
            Some(("alice".into(), 5)),
            "{line}"
        );
        assert_eq!(
            jwt.info_at(token, issued + 3600 + 60),
            None,
            "{line}: expired"
        );
        let public = match key {
            "rsa.pem" | "rsa-pkcs1.pem" => Some("rsa.pub"),
            "ec256.pem" => Some("ec256.pub"),
            "ec384.pem" => Some("ec384.pub"),
            _ => None,
        };
        if let Some(public) = public {
            let verifier = Jwt::new(&options(method, None, Some(public))).unwrap();
            assert!(verifier.info_at(token, issued).is_some(), "{line}");
        }
        seen += 1;
    }
    assert!(seen >= 5);
}

/// The server shares one provider between every connection's tasks.
#[test]
fn provider_is_shareable() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Jwt>();
    shareable::<JwtError>();
}
