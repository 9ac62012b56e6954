//! Security (issue #7): every kind of verification key (generated here),
//! rotation of HS256 secrets, `kid` selection, algorithm confusion,
//! issuer and audience, JWKS reload, and chat over `wss://` with a
//! certificate generated here, reloaded while connections stay open.

#[path = "../common/security.rs"]
mod common;

use std::path::Path;
use std::time::Duration;

use chat_server::auth::{KeySources, SignOptions};
use chat_server::Config;
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::helpers::{Client, TestServer, SECRET};
use common::*;

/// `Ok` if the server accepts `token` (the WebSocket opens), else the
/// HTTP status and the body's reason.
async fn try_token(server: &TestServer, token: &str) -> Result<(), (u16, String)> {
    match Client::connect_url(&format!("{}?token={token}", server.url()), None).await {
        Ok(c) => {
            c.close().await;
            Ok(())
        }
        Err(r) => Err((r.status, r.body.trim().to_owned())),
    }
}

async fn assert_accepted(server: &TestServer, token: &str, what: &str) {
    if let Err(e) = try_token(server, token).await {
        panic!("{what}: refused with {e:?}");
    }
}

async fn assert_refused(server: &TestServer, token: &str, reason: &str, what: &str) {
    assert_eq!(
        try_token(server, token).await,
        Err((401, reason.to_owned())),
        "{what}"
    );
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 temp path").to_owned()
}

#[tokio::test]
async fn rsa_ec_and_ed25519_public_keys_verify_their_tokens() {
    let dir = temp_dir("pem");
    let rsa = TestKey::rsa(0);
    let es256 = TestKey::ec(Algorithm::ES256);
    let es384 = TestKey::ec(Algorithm::ES384);
    let ed = TestKey::ed25519();
    let mut files = Vec::new();
    for (name, key) in [
        ("rsa", &rsa),
        ("es256", &es256),
        ("es384", &es384),
        ("ed", &ed),
    ] {
        let path = dir.join(format!("{name}.pem"));
        write_file(&path, &key.public_pem);
        files.push(path_str(&path));
    }
    // `KID:PATH` gives a PEM key an id.
    files[3] = format!("ed1:{}", files[3]);
    let sources = KeySources {
        public_keys: files.clone(),
        ..KeySources::default()
    };
    let verifier = sources.load().expect("keys load");
    assert_eq!(
        verifier.algorithm_names(),
        ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"]
    );
    assert_eq!(verifier.key_count(), 4);

    let server = TestServer::start_with(|c| {
        c.jwt_secret = None;
        c.jwt_public_keys = files;
    })
    .await;
    let claims = claims(1, "alice");
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        let t = rsa.clone().with_alg(alg).sign(None, &claims);
        assert_accepted(&server, &t, &format!("{alg:?}")).await;
    }
    assert_accepted(&server, &es256.sign(None, &claims), "ES256").await;
    assert_accepted(&server, &es384.sign(None, &claims), "ES384").await;
    assert_accepted(&server, &ed.sign(None, &claims), "EdDSA").await;
    assert_accepted(&server, &ed.sign(Some("ed1"), &claims), "EdDSA with kid").await;

    // Keys the server does not have, and an algorithm it has no key for.
    assert_refused(
        &server,
        &TestKey::rsa(1).sign(None, &claims),
        "invalid token signature",
        "RSA key not configured",
    )
    .await;
    assert_refused(
        &server,
        &TestKey::ec(Algorithm::ES256).sign(None, &claims),
        "invalid token signature",
        "EC key not configured",
    )
    .await;
    assert_refused(
        &server,
        &TestKey::ed25519().sign(None, &claims),
        "invalid token signature",
        "Ed25519 key not configured",
    )
    .await;
    assert_refused(
        &server,
        &sign_hs256(SECRET.as_bytes(), None, &claims),
        "token algorithm not accepted",
        "no HS256 key configured",
    )
    .await;
    // With a kid, only the key of that id is tried.
    assert_refused(
        &server,
        &ed.sign(Some("some-kid"), &claims),
        "unknown token key id",
        "EdDSA token with another kid",
    )
    .await;
    assert_refused(
        &server,
        &rsa.sign(Some("ed1"), &claims),
        "unknown token key id",
        "RS256 token naming the Ed25519 key",
    )
    .await;
}

#[tokio::test]
async fn jwks_keys_are_selected_by_kid() {
    let dir = temp_dir("jwks");
    let r1 = TestKey::rsa(0);
    let r2 = TestKey::rsa(1);
    let e1 = TestKey::ec(Algorithm::ES256);
    let d1 = TestKey::ed25519();
    let mut enc = TestKey::ed25519().jwk_with_kid("enc");
    enc["use"] = json!("enc");
    let mut misdeclared = d1.jwk_with_kid("mis");
    misdeclared["alg"] = json!("RS256");
    let jwks_path = dir.join("jwks.json");
    write_file(
        &jwks_path,
        &jwks(&[
            r1.jwk_with_kid("r1"),
            r2.jwk_with_kid("r2"),
            e1.jwk_with_kid("e1"),
            d1.jwk_with_kid("d1"),
            enc,
            misdeclared,
            json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}),
        ]),
    );
    let server = TestServer::start_with(|c| {
        c.jwt_secret = None;
        c.jwks_file = Some(jwks_path.clone());
    })
    .await;
    let claims = claims(2, "bob");
    assert_accepted(&server, &r1.sign(Some("r1"), &claims), "r1").await;
    assert_accepted(&server, &r2.sign(Some("r2"), &claims), "r2").await;
    assert_accepted(&server, &e1.sign(Some("e1"), &claims), "e1").await;
    assert_accepted(&server, &d1.sign(Some("d1"), &claims), "d1").await;
    // Without kid, every key of the token's algorithm is tried.
    assert_accepted(&server, &r2.sign(None, &claims), "r2 without kid").await;
    // With kid, only that key: r2's token under r1's id fails.
    assert_refused(
        &server,
        &r2.sign(Some("r1"), &claims),
        "invalid token signature",
        "r2 token with kid r1",
    )
    .await;
    assert_refused(
        &server,
        &r1.sign(Some("nope"), &claims),
        "unknown token key id",
        "unknown kid",
    )
    .await;
    // A kid naming a key of another algorithm is no candidate either.
    assert_refused(
        &server,
        &r1.sign(Some("e1"), &claims),
        "unknown token key id",
        "RS256 token with an EC key's kid",
    )
    .await;
    // Skipped keys: encryption use, alg not fitting the key type, P-521.
    assert_refused(
        &server,
        &d1.sign(Some("mis"), &claims),
        "unknown token key id",
        "key whose declared alg does not fit",
    )
    .await;
}

#[tokio::test]
async fn a_previous_secret_works_until_removed_and_the_server_restarted() {
    let mut server = TestServer::start_with(|c| {
        c.jwt_secret = Some("new-secret".into());
        c.jwt_previous_secrets = vec!["old-secret".into()];
    })
    .await;
    let claims = claims(3, "carol");
    let old = sign_hs256(b"old-secret", None, &claims);
    let new = sign_hs256(b"new-secret", None, &claims);
    assert_accepted(&server, &new, "current secret").await;
    assert_accepted(&server, &old, "previous secret").await;
    assert_refused(
        &server,
        &sign_hs256(b"never-configured", None, &claims),
        "invalid token signature",
        "unknown secret",
    )
    .await;

    server.config.jwt_previous_secrets.clear();
    server.restart().await;
    assert_accepted(&server, &new, "current secret after restart").await;
    assert_refused(
        &server,
        &old,
        "invalid token signature",
        "removed secret after restart",
    )
    .await;
}

#[tokio::test]
async fn kid_selects_among_the_secrets() {
    let server = TestServer::start_with(|c| {
        c.jwt_secret_kid = Some("k2".into());
        c.jwt_previous_secrets = vec!["k1:old-secret".into(), ":colon:secret".into()];
    })
    .await;
    let claims = claims(4, "dave");
    let current = SECRET.as_bytes();
    assert_accepted(&server, &sign_hs256(current, Some("k2"), &claims), "k2").await;
    assert_accepted(&server, &sign_hs256(current, None, &claims), "no kid").await;
    assert_accepted(
        &server,
        &sign_hs256(b"old-secret", Some("k1"), &claims),
        "k1",
    )
    .await;
    assert_accepted(
        &server,
        &sign_hs256(b"old-secret", None, &claims),
        "old, no kid",
    )
    .await;
    assert_accepted(
        &server,
        &sign_hs256(b"colon:secret", None, &claims),
        "secret with a colon and no id",
    )
    .await;
    // What the `token` command signs (JWT_SECRET_KID in the header).
    let options = SignOptions {
        kid: Some("k2".into()),
        ..SignOptions::default()
    };
    let signed = chat_server::auth::sign_hs256_with(current, &options, 4, "dave", 60);
    assert_accepted(&server, &signed, "token command with kid").await;

    for (secret, kid, reason) in [
        (current, "k1", "invalid token signature"),
        (&b"old-secret"[..], "k2", "invalid token signature"),
        (current, "k9", "unknown token key id"),
    ] {
        assert_refused(
            &server,
            &sign_hs256(secret, Some(kid), &claims),
            reason,
            &format!("kid {kid}"),
        )
        .await;
    }
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    let dir = temp_dir("confusion");
    let rsa = TestKey::rsa(0);
    let pem_path = dir.join("rsa.pem");
    write_file(&pem_path, &rsa.public_pem);
    let jwks_path = dir.join("jwks.json");
    write_file(&jwks_path, &jwks(&[rsa.jwk_with_kid("r1")]));
    let claims = claims(5, "eve");
    let pem = rsa.public_pem.as_bytes();
    let der = {
        use base64::Engine;
        let body: String = rsa
            .public_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("PEM body")
    };
    let n = rsa.jwk["n"].as_str().unwrap().as_bytes().to_vec();

    // RSA keys only: an HS256 token is refused outright, whatever bytes
    // of the public key it was signed with, with or without a kid.
    let server = TestServer::start_with(|c| {
        c.jwt_secret = None;
        c.jwt_public_keys = vec![path_str(&pem_path)];
        c.jwks_file = Some(jwks_path.clone());
    })
    .await;
    assert_accepted(&server, &rsa.sign(Some("r1"), &claims), "genuine RS256").await;
    for (what, secret) in [("PEM", pem), ("DER", &der[..]), ("JWK n", &n[..])] {
        for kid in [None, Some("r1")] {
            assert_refused(
                &server,
                &sign_hs256(secret, kid, &claims),
                "token algorithm not accepted",
                &format!("HS256 signed with the public key's {what}, kid {kid:?}"),
            )
            .await;
        }
    }
    // alg "none".
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    );
    assert!(
        try_token(&server, &none).await.is_err(),
        "alg none must be refused"
    );
    drop(server);

    // With an HS256 secret configured as well, the RSA key is still never
    // used as an HMAC secret: the forged token fails the signature check.
    let server = TestServer::start_with(|c| {
        c.jwt_public_keys = vec![path_str(&pem_path)];
    })
    .await;
    assert_accepted(&server, &rsa.sign(None, &claims), "genuine RS256").await;
    assert_accepted(&server, &server.token(5, "eve"), "genuine HS256").await;
    assert_refused(
        &server,
        &sign_hs256(pem, None, &claims),
        "invalid token signature",
        "HS256 signed with the PEM, secret configured",
    )
    .await;
}

#[tokio::test]
async fn issuer_and_audience_must_match_when_set() {
    let server = TestServer::start_with(|c| {
        c.jwt_issuer = Some("https://id.example".into());
        c.jwt_audience = Some("chat".into());
    })
    .await;
    let secret = SECRET.as_bytes();
    let with = |iss: Option<&str>, aud: Option<serde_json::Value>| {
        let mut c = claims(6, "frank");
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            c["aud"] = aud;
        }
        sign_hs256(secret, None, &c)
    };
    let iss = Some("https://id.example");
    assert_accepted(&server, &with(iss, Some(json!("chat"))), "both match").await;
    assert_accepted(
        &server,
        &with(iss, Some(json!(["other", "chat"]))),
        "audience list containing ours",
    )
    .await;
    let options = SignOptions {
        kid: None,
        issuer: Some("https://id.example".into()),
        audience: Some("chat".into()),
    };
    let signed = chat_server::auth::sign_hs256_with(secret, &options, 6, "frank", 60);
    assert_accepted(&server, &signed, "token command with issuer and audience").await;

    for (token, reason, what) in [
        (
            with(Some("https://evil.example"), Some(json!("chat"))),
            "token issuer not accepted",
            "wrong issuer",
        ),
        (
            with(None, Some(json!("chat"))),
            "token issuer not accepted",
            "no issuer",
        ),
        (
            with(iss, Some(json!("other"))),
            "token audience not accepted",
            "wrong audience",
        ),
        (
            with(iss, None),
            "token audience not accepted",
            "no audience",
        ),
    ] {
        assert_refused(&server, &token, reason, what).await;
    }
}

#[test]
fn starting_needs_a_usable_key_source() {
    let dir = temp_dir("startup");
    let base = Config::for_tests(
        "postgres://127.0.0.1:1/unused",
        SECRET,
        "127.0.0.1:0".parse().unwrap(),
    );
    let start = |config: Config| {
        chat_server::server::start_with_db_wait(config, Duration::from_millis(100))
            .map(|_| ())
            .expect_err("must not start")
            .to_string()
    };

    let mut c = base.clone();
    c.jwt_secret = None;
    let e = start(c);
    assert!(e.contains("no JWT key configured"), "{e}");

    let mut c = base.clone();
    c.jwt_public_keys = vec![path_str(&dir.join("missing.pem"))];
    let e = start(c);
    assert!(e.contains("missing.pem"), "{e}");

    // A private key given as a public key, and no secret leaks into the error.
    let private = dir.join("private.pem");
    write_file(&private, &TestCert::generate().key_pem);
    let mut c = base.clone();
    c.jwt_public_keys = vec![path_str(&private)];
    let e = start(c);
    assert!(e.contains("expected a PEM public key"), "{e}");
    assert!(!e.contains(SECRET), "{e}");

    let bad_jwks = dir.join("bad.json");
    write_file(&bad_jwks, r#"{"keys": []}"#);
    let mut c = base.clone();
    c.jwks_file = Some(bad_jwks);
    let e = start(c);
    assert!(e.contains("no usable signing key"), "{e}");

    let mut c = base;
    c.tls_cert = Some(dir.join("cert.pem"));
    let e = start(c);
    assert!(e.contains("--tls-cert and --tls-key"), "{e}");
}

#[tokio::test]
async fn jwks_reload_swaps_keys_and_a_failed_reload_keeps_them() {
    let dir = temp_dir("jwks-reload");
    let jwks_path = dir.join("jwks.json");
    let d1 = TestKey::ed25519();
    let d2 = TestKey::ed25519();
    write_file(&jwks_path, &jwks(&[d1.jwk_with_kid("d1")]));
    let server = TestServer::start_with(|c| {
        c.jwt_secret = None;
        c.jwks_file = Some(jwks_path.clone());
    })
    .await;
    server.create_room("keys").await;
    let claims = claims(7, "grace");
    let t1 = d1.sign(Some("d1"), &claims);
    let t2 = d2.sign(Some("d2"), &claims);
    assert_accepted(&server, &t1, "d1 before reload").await;
    let mut open = Client::connect_url(&format!("{}?token={t1}", server.url()), None)
        .await
        .expect("d1 connection");
    open.join("keys").await;

    write_file(&jwks_path, &jwks(&[d2.jwk_with_kid("d2")]));
    assert_refused(&server, &t2, "unknown token key id", "d2 before reload").await;
    server.reload().expect("reload");
    assert_accepted(&server, &t2, "d2 after reload").await;
    assert_refused(&server, &t1, "unknown token key id", "d1 after reload").await;

    // The connection opened with the removed key is untouched.
    open.send(json!({"type": "message", "room": "keys", "content": "still here"}))
        .await;
    let echo = open.recv_type("message").await;
    assert_eq!(echo["data"]["content"], "still here");

    write_file(&jwks_path, "{ not json");
    let e = server
        .reload()
        .expect_err("a broken JWKS must fail the reload");
    assert!(e.contains("jwks.json"), "{e}");
    assert_accepted(&server, &t2, "d2 after a failed reload").await;
}

#[tokio::test]
async fn chat_over_wss_with_a_certificate_the_client_trusts() {
    let dir = temp_dir("tls");
    let cert = TestCert::generate();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    cert.write(&cert_path, &key_path);
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(cert_path.clone());
        c.tls_key = Some(key_path.clone());
        c.handshake_timeout_ms = 500;
    })
    .await;
    server.create_room("secure").await;
    let port = server.addr().port();

    let (mut alice, seen) = wss_connect(port, &[&cert], &server.token(1, "alice"))
        .await
        .expect("alice over wss");
    assert_eq!(seen, cert.der);
    let (mut bob, _) = wss_connect(port, &[&cert], &server.token(2, "bob"))
        .await
        .expect("bob over wss");
    wss_send(&mut bob, json!({"type": "join", "room": "secure"})).await;
    assert_eq!(wss_recv(&mut bob).await["type"], "join_ack");
    let echo = wss_chat(&mut alice, "secure", "over tls").await;
    let got = wss_recv(&mut bob).await;
    assert_eq!(got, echo, "bob gets what alice's echo says");

    // Probes over https; refusals too.
    let health = https_get(port, &[&cert], "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = https_get(port, &[&cert], "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let bad = wss_connect(port, &[&cert], "garbage").await.map(|_| ());
    assert_eq!(bad, Err("401 malformed token".to_owned()));

    // A client that does not trust this certificate, and a plain client.
    let other = TestCert::generate();
    let e = wss_connect(port, &[&other], &server.token(3, "carol"))
        .await
        .map(|_| ())
        .expect_err("untrusted certificate");
    assert!(e.starts_with("tls:"), "{e}");
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(format!(
            "{}?token={}",
            server.url(),
            server.token(3, "carol")
        )),
    )
    .await
    .expect("the plain handshake ends");
    assert!(
        plain.is_err(),
        "a plain ws:// client must not get a WebSocket"
    );

    // A client that opens TCP and says nothing is dropped at the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("the server drops a silent TLS client");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // Still serving.
    wss_send(
        &mut alice,
        json!({"type": "message", "room": "secure", "content": "again"}),
    )
    .await;
    assert_eq!(wss_recv(&mut bob).await["data"]["content"], "again");
}

#[tokio::test]
async fn certificate_reload_serves_the_new_one_and_keeps_open_connections() {
    let dir = temp_dir("tls-reload");
    let old = TestCert::generate();
    let new = TestCert::generate();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    old.write(&cert_path, &key_path);
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(cert_path.clone());
        c.tls_key = Some(key_path.clone());
    })
    .await;
    server.create_room("rotate").await;
    server.create_room("fresh").await;
    let port = server.addr().port();
    let (mut open, seen) = wss_connect(port, &[&old], &server.token(1, "alice"))
        .await
        .expect("connection before the reload");
    assert_eq!(seen, old.der);
    wss_chat(&mut open, "rotate", "before").await;

    new.write(&cert_path, &key_path);
    server.reload().expect("reload");
    let (mut fresh, seen) = wss_connect(port, &[&old, &new], &server.token(2, "bob"))
        .await
        .expect("connection after the reload");
    assert_eq!(seen, new.der, "a new connection sees the new certificate");
    let e = wss_connect(port, &[&old], &server.token(3, "carol"))
        .await
        .map(|_| ())
        .expect_err("the old certificate is no longer served");
    assert!(e.starts_with("tls:"), "{e}");
    wss_chat(&mut open, "rotate", "after").await;
    wss_chat(&mut fresh, "fresh", "fresh").await;

    // A broken certificate file: the reload fails, the new one stays.
    write_file(&cert_path, "not a certificate");
    let e = server
        .reload()
        .expect_err("a broken certificate must fail the reload");
    assert!(e.contains("cert.pem"), "{e}");
    let (_, seen) = wss_connect(port, &[&new], &server.token(4, "dave"))
        .await
        .expect("connection after a failed reload");
    assert_eq!(seen, new.der);
    wss_chat(&mut open, "rotate", "still open").await;
}
