//! Opening one client connection: TCP (optionally from a chosen loopback source address)
//! plus the WebSocket handshake with the JWT, timed.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Instant;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// An open WebSocket client connection.
pub type Ws = WebSocketStream<TcpStream>;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Socket setup or TCP connect failed.
    #[error("tcp: {0}")]
    Tcp(#[from] std::io::Error),
    /// The server refused the upgrade with an HTTP status.
    #[error("refused with HTTP {status}: {body}")]
    Refused {
        /// HTTP status code.
        status: u16,
        /// Response body (trimmed).
        body: String,
    },
    /// Any other WebSocket protocol failure.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
}

impl ConnectError {
    /// Short key used to count errors by kind.
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Tcp(e) => format!("connect_tcp_{:?}", e.kind()).to_lowercase(),
            ConnectError::Refused { status, .. } => format!("refused_{status}"),
            ConnectError::Ws(_) => "connect_ws".into(),
        }
    }
}

/// A connected client with what the handshake told us.
pub struct Connected {
    /// The WebSocket.
    pub ws: Ws,
    /// Value of the `X-Chat-Shard` response header, if present.
    pub shard: Option<u32>,
    /// TCP connect + handshake time in microseconds.
    pub handshake_us: u64,
}

/// Opens a WebSocket to `addr` for `url`, authenticating with `token`.
pub async fn connect(
    addr: SocketAddr,
    url: &str,
    token: &str,
    token_in_query: bool,
    source: Option<Ipv4Addr>,
) -> Result<Connected, ConnectError> {
    let began = Instant::now();
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(src) = source {
        bind_address_no_port(&socket)?;
        socket.bind(SocketAddr::new(src.into(), 0))?;
    }
    socket.set_nodelay(true)?;
    let stream = socket.connect(addr).await?;

    let request = if token_in_query {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}token={token}").into_client_request()?
    } else {
        let mut r = url.into_client_request()?;
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        r.headers_mut().insert(AUTHORIZATION, value);
        r
    };
    // Keep per-connection memory small: tungstenite preallocates the read buffer.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, response) =
        match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok(ok) => ok,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| {
                        String::from_utf8_lossy(b)
                            .trim()
                            .chars()
                            .take(200)
                            .collect()
                    })
                    .unwrap_or_default();
                return Err(ConnectError::Refused {
                    status: resp.status().as_u16(),
                    body,
                });
            }
            Err(e) => return Err(e.into()),
        };
    let shard = response
        .headers()
        .get("x-chat-shard")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    Ok(Connected {
        ws,
        shard,
        handshake_us: began.elapsed().as_micros() as u64,
    })
}

/// Lets the kernel pick the source port at connect time (by 4-tuple) instead of at bind
/// time, so each source address is not limited to one ephemeral range for all destinations.
fn bind_address_no_port(socket: &TcpSocket) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd owned by `socket`, option value points at a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
