#![allow(dead_code)] // each test file uses a part of it
//! Issue 15: a client of the server API for the tests (real HTTP over
//! loopback, with `reqwest`).

use serde_json::Value;

use crate::helpers::TestServer;

/// The key the tests' servers accept.
pub const API_KEY: &str = "test-api-key-0123456789";

/// Turns the server API on (any free port, [`API_KEY`]).
pub fn with_api(c: &mut chat_server::Config) {
    c.api_bind = Some("127.0.0.1:0".parse().unwrap());
    c.api_keys = vec![API_KEY.into()];
}

/// A server API client: each call answers the status and the JSON body
/// (`Value::Null` for an empty or non-JSON body).
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The key sent (`None`: no `Authorization` header).
    pub key: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// A client of `server`'s API with the right key.
    pub fn of(server: &TestServer) -> Api {
        Api::at(server.api_addr())
    }

    /// A client of the API at `addr` with the right key.
    pub fn at(addr: std::net::SocketAddr) -> Api {
        // reqwest's rustls comes without a crypto provider: the server's
        // (`ring`), process-wide; an error means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Api {
            base: format!("http://{addr}"),
            key: Some(API_KEY.into()),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(40))
                .build()
                .unwrap(),
        }
    }

    /// The same client with another key (`None`: none).
    pub fn with_key(&self, key: Option<&str>) -> Api {
        Api {
            key: key.map(str::to_owned),
            ..self.clone()
        }
    }

    /// Sends `method path` with `body` (JSON) and answers (status, body).
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("API body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Sends a raw body (not necessarily JSON) with `content-type: application/json`.
    pub async fn call_raw(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.expect("API request");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("API body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call("GET", path, None).await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, Some(body)).await
    }

    /// `PUT path` with `body`.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("PUT", path, Some(body)).await
    }

    /// `PATCH path` with `body`.
    pub async fn patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.call("PATCH", path, Some(body)).await
    }

    /// `DELETE path` (with an optional body).
    pub async fn delete(&self, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call("DELETE", path, body).await
    }
}

/// The `error.code` of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}
