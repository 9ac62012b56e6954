//! Room provisioning through PostgreSQL.

use anyhow::Context as _;

/// Inserts every room in `names` (existing rooms are left alone).
pub async fn ensure_rooms(database_url: &str, names: &[String]) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .context("connecting to --database-url to provision rooms")?;
    let conn_task = tokio::spawn(connection);
    let stmt = client
        .prepare("INSERT INTO rooms(name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .await
        .context("preparing room insert (is the schema migrated?)")?;
    for name in names {
        client
            .execute(&stmt, &[name])
            .await
            .with_context(|| format!("creating room {name}"))?;
    }
    drop(client);
    let _ = conn_task.await;
    Ok(())
}
