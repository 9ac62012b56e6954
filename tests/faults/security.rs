//! Security with the real binary: SIGHUP reloads the TLS certificate and
//! the JWKS file while open connections keep working; a failed reload keeps
//! the previous ones; the start-up line names algorithms and key counts
//! (never keys); rotation of `JWT_PREVIOUS_SECRETS` by restart; no key
//! source, no start.

#[path = "../common/security.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

use crate::harness::*;

/// Waits until the server has logged `needle` `count` times.
async fn wait_log_count(server: &ServerProcess, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = server
            .log_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count();
        if seen >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {count}× {needle:?} in the log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `Ok` if a plain `ws://` handshake with `token` opens a WebSocket, else
/// the HTTP status.
async fn try_plain(server: &ServerProcess, token: &str) -> Result<(), u16> {
    let url = format!("{}?token={token}", server.url());
    match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("handshake timed out")
    {
        Ok((mut ws, _)) => {
            let _ = ws.close(None).await;
            Ok(())
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("handshake failed unexpectedly: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_certificate_and_jwks_keeping_open_connections() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let dir = temp_dir("sighup");
    let (cert_path, key_path, jwks_path) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("jwks.json"),
    );
    let old_cert = TestCert::generate();
    let new_cert = TestCert::generate();
    let d1 = TestKey::ed25519();
    let d2 = TestKey::ed25519();
    old_cert.write(&cert_path, &key_path);
    write_file(&jwks_path, &jwks(&[d1.jwk_with_kid("d1")]));

    let cert_env = cert_path.to_str().unwrap().to_owned();
    let mut server = ServerProcess::start(
        &db.url,
        &[
            ("CHAT_TLS_CERT", &cert_env),
            ("CHAT_TLS_KEY", key_path.to_str().unwrap()),
            ("CHAT_JWKS_FILE", jwks_path.to_str().unwrap()),
        ],
    )
    .await;
    let port = server.port;
    assert!(
        server.log_contains("jwt keys active algorithms=HS256,EdDSA keys=2"),
        "start-up line:\n{}",
        server.log_text()
    );
    assert!(
        server.log_contains(&format!("tls active cert={cert_env}")),
        "tls line:\n{}",
        server.log_text()
    );
    create_room(&db.url, "hup").await;

    let hs = token(1, "alice");
    let (mut open, seen) = wss_connect(port, &[&old_cert], &hs)
        .await
        .expect("wss before the reload");
    assert_eq!(seen, old_cert.der);
    wss_chat(&mut open, "hup", "before").await;
    let t1 = d1.sign(Some("d1"), &claims(2, "bob"));
    let t2 = d2.sign(Some("d2"), &claims(2, "bob"));
    wss_connect(port, &[&old_cert], &t1)
        .await
        .expect("d1 before the reload");
    assert_eq!(
        wss_connect(port, &[&old_cert], &t2).await.map(|_| ()),
        Err("401 unknown token key id".to_owned())
    );

    new_cert.write(&cert_path, &key_path);
    write_file(&jwks_path, &jwks(&[d2.jwk_with_kid("d2")]));
    server.signal("HUP");
    wait_log_count(&server, "tls reloaded", 1).await;

    let (mut fresh, seen) = wss_connect(port, &[&old_cert, &new_cert], &t2)
        .await
        .expect("d2 after the reload");
    assert_eq!(
        seen, new_cert.der,
        "a new connection sees the new certificate"
    );
    assert_eq!(
        wss_connect(port, &[&new_cert], &t1).await.map(|_| ()),
        Err("401 unknown token key id".to_owned()),
        "d1 was removed from the JWKS"
    );
    let e = wss_connect(port, &[&old_cert], &hs)
        .await
        .map(|_| ())
        .expect_err("the old certificate is no longer served");
    assert!(e.starts_with("tls:"), "{e}");
    // The connection opened before the reload still works.
    wss_chat(&mut open, "hup", "after").await;
    wss_chat(&mut fresh, "hup", "fresh").await;

    // A broken certificate: logged, the previous one stays.
    write_file(&cert_path, "-----BEGIN CERTIFICATE-----\ngarbage\n");
    server.signal("HUP");
    wait_log_count(&server, "tls not reloaded", 1).await;
    let (_, seen) = wss_connect(port, &[&new_cert], &hs)
        .await
        .expect("wss after a failed reload");
    assert_eq!(seen, new_cert.der);
    assert!(server.is_running());

    server.assert_no_panic();
    assert!(
        !server.log_contains(SECRET),
        "the secret leaked into the log"
    );
    assert!(
        !server.log_contains(d2.jwk["x"].as_str().unwrap()),
        "key material in the log"
    );
    drop(server);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_secret_works_until_removed_and_restarted() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let old = sign_hs256(b"old-secret", None, &claims(1, "alice"));
    let new = token(1, "alice");

    let mut server = ServerProcess::start(&db.url, &[("JWT_PREVIOUS_SECRETS", "old-secret")]).await;
    assert!(
        server.log_contains("jwt keys active algorithms=HS256 keys=2"),
        "{}",
        server.log_text()
    );
    assert_eq!(try_plain(&server, &new).await, Ok(()));
    assert_eq!(try_plain(&server, &old).await, Ok(()));
    assert!(!server.log_contains("old-secret"), "a secret leaked");
    server.signal("TERM");
    server.wait_exit(Duration::from_secs(15)).await;

    let server = ServerProcess::start(&db.url, &[]).await;
    assert_eq!(try_plain(&server, &new).await, Ok(()));
    assert_eq!(try_plain(&server, &old).await, Err(401));
    drop(server);
    db.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_source_no_start_and_a_public_key_alone_suffices() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let mut server = ServerProcess::spawn(&db.url, &[("JWT_SECRET", "")]);
    let status = server.wait_exit(Duration::from_secs(15)).await;
    assert!(!status.success());
    assert!(
        server.log_contains("no JWT key configured"),
        "{}",
        server.log_text()
    );

    let dir = temp_dir("pem-only");
    let ed = TestKey::ed25519();
    let pem = dir.join("ed.pem");
    write_file(&pem, &ed.public_pem);
    let server = ServerProcess::start(
        &db.url,
        &[
            ("JWT_SECRET", ""),
            ("CHAT_JWT_PUBLIC_KEY", pem.to_str().unwrap()),
        ],
    )
    .await;
    assert!(
        server.log_contains("jwt keys active algorithms=EdDSA keys=1"),
        "{}",
        server.log_text()
    );
    assert_eq!(
        try_plain(&server, &ed.sign(None, &claims(1, "alice"))).await,
        Ok(())
    );
    assert_eq!(try_plain(&server, &token(1, "alice")).await, Err(401));
    drop(server);
    db.drop_now().await;
}
