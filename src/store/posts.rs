//! Issue 15: what the server API's message routes read before they hand a
//! request to a writer (the sender's name, whether the room or recipient
//! exists), and the operator's view of a room's history (no membership
//! needed). Messages themselves are written by the writers, as every
//! door's are.

use super::{Store, StoreError, Window};
use crate::protocol::{StoredMessage, UserId};

/// The sender `$1`'s username (NULL: no such user), whether room `$2`
/// exists (true when NULL), whether user `$3` exists (true when NULL).
const SENDER: &str = "SELECT (SELECT username FROM users WHERE id = $1::int8), \
        ($2::text IS NULL OR EXISTS (SELECT 1 FROM rooms WHERE name = $2::text)), \
        ($3::int8 IS NULL OR EXISTS (SELECT 1 FROM users WHERE id = $3::int8))";

/// Whether room `$1` exists.
const ROOM_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM rooms WHERE name = $1::text)";

/// What [`Store::sender`] found: who the named sender is and whether what
/// it addresses exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The sender's username (`None`: no such user).
    pub username: Option<String>,
    /// The room exists (true when no room was named).
    pub room: bool,
    /// The recipient exists (true when none was named).
    pub to: bool,
}

impl Store {
    /// One round trip: the username of `from`, and whether `room` and `to`
    /// (when named) exist.
    pub async fn sender(
        &self,
        from: UserId,
        room: Option<&str>,
        to: Option<UserId>,
    ) -> Result<Sender, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(SENDER).await?;
        let row = client.query_one(&stmt, &[&from, &room, &to]).await?;
        Ok(Sender {
            username: row.get(0),
            room: row.get(1),
            to: row.get(2),
        })
    }

    /// A window of room `room`'s history in its current state (deleted
    /// messages as tombstones), oldest first, as the operator reads it (no
    /// membership needed); `None` when the room does not exist.
    pub async fn operator_room_history(
        &self,
        room: &str,
        window: Window,
    ) -> Result<Option<Vec<StoredMessage>>, StoreError> {
        {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(ROOM_EXISTS).await?;
            if !client.query_one(&stmt, &[&room]).await?.get::<_, bool>(0) {
                return Ok(None);
            }
        }
        self.room_window(room, window).await.map(Some)
    }
}
