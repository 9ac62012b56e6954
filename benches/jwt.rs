//! HS256 token verification at the handshake:
//! `chat_server::auth::Verifier::verify` of a valid token (signed with
//! `auth::sign_hs256`) and of a token with a bad signature.
//!
//! Every WebSocket upgrade verifies one token on the accepting shard's
//! thread before anything else happens, so this is a fixed cost of every
//! connection: it bounds the reconnect-storm rate one core can absorb, and
//! the bad-signature case shows what a flood of forged tokens costs.
//!
//! `baseline_decode` is one bare `jsonwebtoken::decode` with the same key
//! and validation (what verification cost before the key set, issue #7);
//! the `rotation_*` cases verify against the current and a previous secret.

use std::hint::black_box;

use chat_server::auth::{sign_hs256, AuthError, KeySources, Verifier};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

const SECRET: &[u8] = b"bench-secret-of-a-realistic-length-32B";
const PREVIOUS: &str = "bench-previous-secret-of-32-bytes-xx";

/// The claims the server reads (as `auth` does).
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Claims {
    user_id: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
    username: Option<String>,
    exp: Option<i64>,
}

fn bench_verify(c: &mut Criterion) {
    let verifier = Verifier::hs256(SECRET, 30);
    let valid = sign_hs256(SECRET, 123_456, "alice", 3600);
    let forged = sign_hs256(b"some-other-secret", 123_456, "alice", 3600);
    assert!(verifier.verify(&valid).is_ok());
    assert_eq!(verifier.verify(&forged), Err(AuthError::Signature));

    let rotation = KeySources {
        secret: Some(String::from_utf8(SECRET.to_vec()).unwrap()),
        previous_secrets: vec![PREVIOUS.to_owned()],
        leeway_secs: 30,
        ..KeySources::default()
    }
    .load()
    .unwrap();
    let previous = sign_hs256(PREVIOUS.as_bytes(), 123_456, "alice", 3600);
    assert!(rotation.verify(&previous).is_ok());

    let key = DecodingKey::from_secret(SECRET);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 30;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);

    let mut g = c.benchmark_group("jwt/verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("valid", |b| b.iter(|| verifier.verify(black_box(&valid))));
    g.bench_function("baseline_decode", |b| {
        b.iter(|| jsonwebtoken::decode::<Claims>(black_box(&valid), &key, &validation))
    });
    g.bench_function("bad_signature", |b| {
        b.iter(|| verifier.verify(black_box(&forged)))
    });
    g.bench_function("rotation_current", |b| {
        b.iter(|| rotation.verify(black_box(&valid)))
    });
    g.bench_function("rotation_previous", |b| {
        b.iter(|| rotation.verify(black_box(&previous)))
    });
    g.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
