//! HS256 token verification at the handshake:
//! `chat_server::auth::Verifier::verify` of a valid token (signed with
//! `auth::sign_hs256`) and of a token with a bad signature.
//!
//! Every WebSocket upgrade verifies one token on the accepting shard's
//! thread before anything else happens, so this is a fixed cost of every
//! connection: it bounds the reconnect-storm rate one core can absorb, and
//! the bad-signature case shows what a flood of forged tokens costs.

use std::hint::black_box;

use chat_server::auth::{sign_hs256, AuthError, Verifier};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SECRET: &[u8] = b"bench-secret-of-a-realistic-length-32B";

fn bench_verify(c: &mut Criterion) {
    let verifier = Verifier::hs256(SECRET, 30);
    let valid = sign_hs256(SECRET, 123_456, "alice", 3600);
    let forged = sign_hs256(b"some-other-secret", 123_456, "alice", 3600);
    assert!(verifier.verify(&valid).is_ok());
    assert_eq!(verifier.verify(&forged), Err(AuthError::Signature));

    let mut g = c.benchmark_group("jwt/verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("valid", |b| b.iter(|| verifier.verify(black_box(&valid))));
    g.bench_function("bad_signature", |b| {
        b.iter(|| verifier.verify(black_box(&forged)))
    });
    g.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
