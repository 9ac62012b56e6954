//! The side services' threads (the server API, `--metrics-bind`, the
//! event feed's jobs): each a named OS thread running one current-thread
//! tokio runtime, away from the shards, stopped by the server's [`Phase`].

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::watch;
use tracing::warn;

use crate::shard::Phase;

/// Runs `service` on a new thread named `name`, on its own current-thread
/// runtime (a runtime that cannot be built is logged; the thread ends).
pub fn spawn<F, Fut>(name: &str, service: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread_name = name.to_owned();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(service()),
                Err(e) => {
                    warn!(error = %e, thread = %thread_name, "no runtime for a service thread")
                }
            }
        })
}

/// Binds `addr` now (so that a bad address fails the start), then serves
/// the listener with `serve` on a [`spawn`]ed thread. Returns the bound
/// address (the real port when `addr`'s is 0) and the thread.
pub fn spawn_listener<F, Fut>(
    name: &str,
    addr: SocketAddr,
    serve: F,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)>
where
    F: FnOnce(tokio::net::TcpListener, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let thread_name = name.to_owned();
    let thread = spawn(name, move || async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => serve(listener, bound).await,
            Err(e) => warn!(error = %e, thread = %thread_name, "listener failed"),
        }
    })?;
    Ok((bound, thread))
}

/// Resolves once `phase` leaves [`Phase::Running`] (or its sender is gone).
pub async fn until_draining(phase: &mut watch::Receiver<Phase>) {
    while *phase.borrow() == Phase::Running {
        if phase.changed().await.is_err() {
            break;
        }
    }
}
