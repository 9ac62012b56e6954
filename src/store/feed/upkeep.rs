//! The feed's upkeep in PostgreSQL: retention (deleting the oldest events
//! in bounded chunks) and the webhook cursors and lock.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::sql;

/// Deletes up to `chunk` of the oldest events, if they are all older than
/// `retention` (the longest such prefix: never an event younger than
/// that), and moves `purged_through` past them, in one transaction. Does
/// nothing when another node holds the retention lock. Returns how many
/// events were deleted.
pub async fn purge(
    client: &mut Client,
    retention: Duration,
    chunk: u32,
) -> Result<u64, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let locked: bool = tx
        .query_one(
            sql::TRY_RETENTION_LOCK,
            &[&sql::LOCK_CLASS, &sql::RETENTION_LOCK],
        )
        .await?
        .get(0);
    if !locked {
        return Ok(0);
    }
    let from = super::head(&tx).await?.purged_through;
    let upto: Option<i64> = tx
        .query_one(
            sql::PURGEABLE,
            &[&from, &retention.as_secs_f64(), &i64::from(chunk)],
        )
        .await?
        .get(0);
    let Some(upto) = upto else {
        return Ok(0);
    };
    let deleted = tx.execute(sql::PURGE, &[&from, &upto]).await?;
    // Last: the head's row lock, held only until the commit.
    tx.execute(sql::SET_PURGED, &[&upto]).await?;
    tx.commit().await?;
    Ok(deleted)
}

/// The second key of `url`'s webhook lock: a stable hash of the URL (the
/// same on every node and build), never the retention lock's 0.
pub fn webhook_lock_key(url: &str) -> i32 {
    let d = Sha256::digest(url.as_bytes());
    let k = i32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    if k == sql::RETENTION_LOCK {
        1
    } else {
        k
    }
}

/// Tries to take `url`'s webhook lock for this connection's session (it is
/// released when the connection ends).
pub async fn try_webhook_lock(client: &Client, url: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            sql::TRY_WEBHOOK_LOCK,
            &[&sql::LOCK_CLASS, &webhook_lock_key(url)],
        )
        .await?
        .get(0))
}

/// `url`'s cursor: the last seq it acknowledged; a URL seen for the first
/// time starts at the feed's head.
pub async fn cursor(client: &Client, url: &str) -> Result<i64, tokio_postgres::Error> {
    Ok(client.query_one(sql::CURSOR_INIT, &[&url]).await?.get(0))
}

/// Stores `url`'s cursor.
pub async fn set_cursor(client: &Client, url: &str, seq: i64) -> Result<(), tokio_postgres::Error> {
    client.execute(sql::CURSOR_SET, &[&url, &seq]).await?;
    Ok(())
}

/// `url`'s stored cursor (`None`: never configured).
pub async fn stored_cursor(
    client: &Client,
    url: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    Ok(client
        .query_opt(sql::CURSOR_GET, &[&url])
        .await?
        .map(|r| r.get(0)))
}
