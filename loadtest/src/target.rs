//! Target URL validation: only loopback WebSocket servers may be loaded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio_tungstenite::tungstenite::http::Uri;

/// Why a `--url` was refused.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a parseable URI.
    #[error("invalid --url {0:?}: {1}")]
    Invalid(String, String),
    /// Scheme other than ws://.
    #[error("--url {0:?}: only ws:// is supported")]
    Scheme(String),
    /// Host outside the loopback range.
    #[error("--url {0:?}: host {1:?} is not a loopback address; loadtest only targets 127.0.0.0/8, ::1 or localhost")]
    NotLoopback(String, String),
}

/// A validated loopback target.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given (used for the HTTP request line and Host header).
    pub url: String,
    /// Socket address to connect to.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses and validates `url`; only `ws://` on a loopback host is accepted.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let uri: Uri =
            url.parse()
                .map_err(|e: tokio_tungstenite::tungstenite::http::uri::InvalidUri| {
                    TargetError::Invalid(url.to_string(), e.to_string())
                })?;
        if uri.scheme_str() != Some("ws") {
            return Err(TargetError::Scheme(url.to_string()));
        }
        let host = uri
            .host()
            .ok_or_else(|| TargetError::Invalid(url.to_string(), "no host".into()))?;
        let ip = loopback_ip(host)
            .ok_or_else(|| TargetError::NotLoopback(url.to_string(), host.to_string()))?;
        let port = uri.port_u16().unwrap_or(80);
        Ok(Target {
            url: url.to_string(),
            addr: SocketAddr::new(ip, port),
        })
    }
}

/// The loopback address `host` names, or None if it names anything else.
pub fn loopback_ip(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = bare.parse().ok()?;
    ip.is_loopback().then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback() {
        for (url, addr) in [
            ("ws://127.0.0.1:9001/", "127.0.0.1:9001"),
            ("ws://127.3.4.5:1/x", "127.3.4.5:1"),
            ("ws://localhost:9001", "127.0.0.1:9001"),
            ("ws://[::1]:9001/", "[::1]:9001"),
            ("ws://127.0.0.1/", "127.0.0.1:80"),
        ] {
            assert_eq!(
                Target::parse(url).unwrap().addr,
                addr.parse().unwrap(),
                "{url}"
            );
        }
    }

    #[test]
    fn refuses_everything_else() {
        for url in [
            "ws://10.0.0.1:9001/",
            "ws://192.168.1.1/",
            "ws://8.8.8.8/",
            "ws://example.com/",
            "ws://[::2]/",
            "ws://0.0.0.0:9001/",
        ] {
            assert!(
                matches!(Target::parse(url), Err(TargetError::NotLoopback(..))),
                "{url}"
            );
        }
        assert!(matches!(
            Target::parse("wss://127.0.0.1/"),
            Err(TargetError::Scheme(_))
        ));
        assert!(Target::parse("not a url at all").is_err());
    }
}
