//! The event feed's background thread (always started): retention, and
//! the webhook deliverer when `--webhook-url` is set. Its own thread and
//! current-thread runtime (not a shard, not the API's: the webhook runs
//! without `--api-bind`), stopped when the server leaves `Running`.
//!
//! Retention runs every `--feed-retention / 10` (between 50 ms and one
//! minute): each pass deletes the oldest events older than the retention
//! in transactions of at most `--feed-purge-chunk`, under a transaction
//! advisory lock, so one node at a time does it in a cluster
//! (`store::feed::upkeep::purge`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, info_span, warn, Instrument};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shard::Phase;
use crate::store::feed::upkeep;
use crate::webhook;

/// How often retention runs for a retention of `retention`.
pub fn purge_every(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_millis(50), Duration::from_secs(60))
}

/// Starts the thread. It ends when `phase` leaves `Running`.
pub fn spawn(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    mut phase: watch::Receiver<Phase>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    crate::service_thread::spawn("feed", move || async move {
        let stop = crate::service_thread::until_draining(&mut phase);
        let deliver = async {
            match (&config.webhook_url, &config.webhook_secret) {
                (Some(url), Some(secret)) => {
                    webhook::run(
                        webhook::Settings {
                            url: url.clone(),
                            secret: secret.clone(),
                            batch: config.webhook_batch,
                            timeout: config.webhook_timeout,
                            backoff_max: config.webhook_backoff_max,
                            poll: config.feed_poll(),
                            database_url: config.database_url.clone(),
                        },
                        metrics.clone(),
                    )
                    .await
                }
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop => {}
            _ = deliver => {}
            _ = retention(&config, &metrics) => {}
        }
    })
}

/// Deletes what is older than `--feed-retention`, forever.
async fn retention(config: &Config, metrics: &Metrics) {
    let every = purge_every(config.feed_retention);
    let mut client = None;
    loop {
        tokio::time::sleep(every).await;
        let c = match &mut client {
            Some(c) => c,
            None => match crate::store::connect(&config.database_url).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    warn!(error = %e, "feed retention: cannot connect");
                    continue;
                }
            },
        };
        let pass = async {
            let mut total = 0u64;
            loop {
                let n = upkeep::purge(c, config.feed_retention, config.feed_purge_chunk).await?;
                total += n;
                metrics.feed.purged.add(n);
                if n < u64::from(config.feed_purge_chunk) {
                    return Ok::<u64, tokio_postgres::Error>(total);
                }
            }
        }
        .instrument(info_span!("feed_retention"));
        match pass.await {
            Ok(0) => {}
            Ok(n) => info!(
                deleted = n,
                "feed retention: deleted events older than --feed-retention"
            ),
            Err(e) => {
                warn!(error = %e, "feed retention failed");
                client = None;
            }
        }
    }
}
