//! `--metrics-bind`: `/metrics` on an address of its own, so that the
//! public port need not expose it. Plain HTTP on one small thread: each
//! request is read by [`crate::handshake::read_upgrade`] (its size and time
//! limits) and answered by [`crate::web::metrics`] (its token check); any
//! other path is 404. At most [`MAX_SCRAPES`] requests at a time, more are
//! closed at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tracing::info;

use crate::config::Config;
use crate::handshake::{read_upgrade, HandshakeError};
use crate::shard::Phase;
use crate::web::{self, Response};

/// Requests served at the same time.
pub const MAX_SCRAPES: usize = 4;
/// Time a scraper has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Renders the metrics page (called once per authorised scrape).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr` now (so that a bad address fails the start) and serves
/// `/metrics` on a thread of its own until `phase` leaves `Running`.
/// Returns the bound address and the thread.
pub fn spawn(
    addr: SocketAddr,
    config: Arc<Config>,
    render: Render,
    mut phase: watch::Receiver<Phase>,
) -> std::io::Result<(SocketAddr, std::thread::JoinHandle<()>)> {
    crate::service_thread::spawn_listener("metrics", addr, move |listener, bound| async move {
        info!(addr = %bound, "serving /metrics");
        let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            continue; // dropped: closed at once
                        };
                        let (config, render) = (config.clone(), render.clone());
                        tokio::spawn(async move {
                            serve(stream, &config, &render).await;
                            drop(slot);
                        });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                },
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() == Phase::Closing {
                        break;
                    }
                }
            }
        }
    })
}

async fn serve(mut stream: tokio::net::TcpStream, config: &Config, render: &Render) {
    let response = match read_upgrade(&mut stream, MAX_REQUEST_BYTES, READ_TIMEOUT).await {
        Err(HandshakeError::Plain(request)) if request.path == "/metrics" => {
            web::metrics(&request, config, || render())
        }
        Err(HandshakeError::Io(_)) => return,
        Err(HandshakeError::Timeout) => Response::text(408, "request timed out"),
        _ => Response::text(404, "not found"),
    };
    response.write(&mut stream).await;
}
