use std::path::PathBuf;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::*;

const SECRET: &str = "a-test-secret-that-is-32-bytes-long!";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

fn now() -> u64 {
    crate::clock::unix_millis() / 1000
}

fn hs(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

fn signed(alg: Algorithm, kid: Option<&str>, pem: &str, claims: &Value) -> String {
    let pem = std::fs::read(fixture(pem)).unwrap();
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, &key).unwrap()
}

fn hmac_auth() -> Auth {
    let settings = AuthSettings {
        hmac_secret: Some(SECRET.into()),
        audience: Some("roomcast".into()),
        issuer: Some("https://backend.example".into()),
        ..AuthSettings::default()
    };
    Auth::new(&settings).unwrap().unwrap()
}

fn good() -> Value {
    json!({"sub": "alice", "exp": now() + 600, "aud": "roomcast", "iss": "https://backend.example"})
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

#[test]
fn no_key_means_no_auth() {
    assert!(Auth::new(&AuthSettings::default()).unwrap().is_none());
}

#[test]
fn a_good_token_gives_user_expiry_info_and_grants() {
    let claims = with(good(), "info", json!({"name": "Alice"}));
    let claims = with(claims, "channels", json!({"publish": ["news:*"]}));
    let id = hmac_auth().verify(&hs(&claims), 1024).unwrap();
    assert_eq!(&*id.user, "alice");
    assert_eq!(id.info.as_deref(), Some(br#"{"name":"Alice"}"#.as_slice()));
    let news = ChannelName::parse("news:today").unwrap();
    assert!(Grants::allows(&id.grants.publish, &news));
    assert!(!Grants::allows(&id.grants.subscribe, &news));
}

#[test]
fn each_refusal_has_its_own_code() {
    let auth = hmac_auth();
    let code = |token: &str| auth.verify(token, 1024).unwrap_err().code();
    let wrong_key = {
        let key = EncodingKey::from_secret(b"another-secret-another-secret-another");
        encode(&Header::new(Algorithm::HS256), &good(), &key).unwrap()
    };
    assert_eq!(code(&wrong_key), ErrorCode::TokenSignature);
    assert_eq!(
        code(&hs(&with(good(), "exp", json!(now() - 60)))),
        ErrorCode::TokenExpired
    );
    assert_eq!(
        code(&hs(&with(good(), "nbf", json!(now() + 600)))),
        ErrorCode::TokenNotYetValid
    );
    assert_eq!(
        code(&hs(&with(good(), "aud", json!("other")))),
        ErrorCode::TokenAudience
    );
    assert_eq!(
        code(&hs(&with(good(), "iss", json!("evil")))),
        ErrorCode::TokenIssuer
    );
    let no_sub = good()
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .filter(|(k, _)| k != "sub");
    assert_eq!(
        code(&hs(&Value::Object(no_sub.collect()))),
        ErrorCode::TokenMalformed
    );
    assert_eq!(code("not.a.jwt"), ErrorCode::TokenMalformed);
    assert_eq!(code(""), ErrorCode::TokenMalformed);
    let rs = signed(Algorithm::RS256, None, "rsa-private.pem", &good());
    assert_eq!(
        code(&rs),
        ErrorCode::TokenAlgorithm,
        "no RSA key is configured"
    );
}

#[test]
fn alg_none_is_refused_as_an_algorithm_problem() {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good())
    );
    let error = hmac_auth().verify(&token, 1024).unwrap_err();
    assert_eq!(error.code(), ErrorCode::TokenAlgorithm, "{error}");
    let token = format!("{}.{}.", b64(&json!({"alg": "None"})), b64(&good()));
    assert_eq!(
        hmac_auth().verify(&token, 1024).unwrap_err().code(),
        ErrorCode::TokenAlgorithm
    );
}

#[test]
fn oversized_or_undeliverable_info_is_refused() {
    let auth = hmac_auth();
    let big = with(good(), "info", json!("x".repeat(2000)));
    assert_eq!(
        auth.verify(&hs(&big), 1024).unwrap_err().code(),
        ErrorCode::TokenMalformed
    );
}

#[test]
fn channel_tokens_are_bound_to_user_and_channel() {
    let auth = hmac_auth();
    let room = ChannelName::parse("secret:room").unwrap();
    let token = hs(&with(good(), "channel", json!("secret:room")));
    auth.verify_channel(&token, "alice", &room).unwrap();
    let other_user = auth.verify_channel(&token, "bob", &room).unwrap_err();
    assert_eq!(other_user.code(), ErrorCode::TokenMismatch);
    let other_room = ChannelName::parse("secret:other").unwrap();
    assert_eq!(
        auth.verify_channel(&token, "alice", &other_room)
            .unwrap_err()
            .code(),
        ErrorCode::TokenMismatch
    );
    // Nor does a channel token open a connection.
    assert_eq!(
        auth.verify(&token, 1024).unwrap_err().code(),
        ErrorCode::TokenMismatch
    );
}

#[test]
fn rs256_and_es256_from_pem_and_jwks() {
    let claims = json!({"sub": "bob", "exp": now() + 600});
    let pem = AuthSettings {
        public_key_file: Some(fixture("rsa-public.pem")),
        ..AuthSettings::default()
    };
    let auth = Auth::new(&pem).unwrap().unwrap();
    auth.verify(
        &signed(Algorithm::RS256, None, "rsa-private.pem", &claims),
        64,
    )
    .unwrap();
    let jwks = AuthSettings {
        jwks_file: Some(fixture("jwks.json")),
        ..AuthSettings::default()
    };
    let auth = Auth::new(&jwks).unwrap().unwrap();
    auth.verify(
        &signed(Algorithm::ES256, Some("ec-1"), "ec-private.pem", &claims),
        64,
    )
    .unwrap();
    auth.verify(
        &signed(Algorithm::RS256, Some("rsa-1"), "rsa-private.pem", &claims),
        64,
    )
    .unwrap();
    // The only RSA key of the set checks a token without a key id.
    auth.verify(
        &signed(Algorithm::RS256, None, "rsa-private.pem", &claims),
        64,
    )
    .unwrap();
    let stranger = signed(Algorithm::RS256, Some("rsa-2"), "rsa2-private.pem", &claims);
    assert_eq!(
        auth.verify(&stranger, 64).unwrap_err().code(),
        ErrorCode::TokenSignature
    );
}

#[test]
fn a_reload_picks_up_a_rotated_jwks_and_a_broken_one_keeps_the_old_keys() {
    let dir = std::env::temp_dir().join(format!("roomcast-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::copy(fixture("jwks.json"), &path).unwrap();
    let settings = AuthSettings {
        jwks_file: Some(path.clone()),
        ..AuthSettings::default()
    };
    let auth = Auth::new(&settings).unwrap().unwrap();
    let claims = json!({"sub": "bob", "exp": now() + 600});
    let new_key = signed(Algorithm::RS256, Some("rsa-2"), "rsa2-private.pem", &claims);
    assert!(auth.verify(&new_key, 64).is_err());
    std::fs::write(&path, "not json").unwrap();
    assert!(auth.reload().is_err());
    let old_key = signed(Algorithm::RS256, Some("rsa-1"), "rsa-private.pem", &claims);
    auth.verify(&old_key, 64).unwrap();
    std::fs::copy(fixture("jwks-rotated.json"), &path).unwrap();
    auth.reload().unwrap();
    auth.verify(&new_key, 64).unwrap();
    assert!(auth.verify(&old_key, 64).is_err());
    let _ = std::fs::remove_dir_all(dir);
}
