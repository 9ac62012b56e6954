//! Room access across nodes (issue 14): an invitation subscribes the
//! invitee's connections on another node, and a mute (and its lifting)
//! reaches the muted user's connections there.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{Client, SharedDb, SERIAL};
use crate::nodes::{finish, nats_url, start_node};

/// Sends `request` with `ref` and returns the reply carrying it.
async fn ask(c: &mut Client, mut request: Value, r: i64) -> Value {
    request["ref"] = json!(r);
    c.send(request).await;
    loop {
        let v = c.recv().await;
        if v["ref"] == r {
            return v;
        }
    }
}

/// Sends `content` to `room` until the reply is (`want_error`) or is not an
/// error, at most 10 s; the last reply.
async fn send_until(c: &mut Client, room: &str, want_error: bool, first_ref: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut r = first_ref;
    loop {
        let request = json!({"type": "message", "room": room, "content": format!("try {r}")});
        let v = ask(c, request, r).await;
        if (v["type"] == "error") == want_error || Instant::now() > deadline {
            return v;
        }
        r += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_and_a_mute_reach_the_users_connections_on_another_node() {
    let _serial = SERIAL.lock().await;
    let db = SharedDb::create().await;
    let nats = nats_url();
    let nodes = [
        start_node(&db.url, &nats, "a").await,
        start_node(&db.url, &nats, "b").await,
    ];
    let mut owner = Client::connect(&nodes[0], 1, "owner").await;
    let created = ask(
        &mut owner,
        json!({"type": "create_room", "room": "vault", "visibility": "private"}),
        1,
    )
    .await;
    assert_eq!(created["type"], "room_created", "{created}");
    let mut guest = Client::connect(&nodes[1], 2, "guest").await;
    let refused = ask(&mut guest, json!({"type": "join", "room": "vault"}), 2).await;
    assert_eq!(refused["data"]["message"], "room 'vault' does not exist");

    let ack = ask(
        &mut owner,
        json!({"type": "invite", "room": "vault", "user": 2}),
        3,
    )
    .await;
    assert_eq!(ack["type"], "invite_ack", "{ack}");
    // The guest's connection on node b follows the room without joining:
    // its own message is echoed and reaches the owner on node a.
    let echo = send_until(&mut guest, "vault", false, 100).await;
    assert_eq!(echo["type"], "message", "{echo}");
    let got = loop {
        let v = owner.recv().await;
        if v["type"] == "message" {
            break v;
        }
    };
    assert_eq!(got["data"]["fromUser"], 2, "{got}");

    let ack = ask(
        &mut owner,
        json!({"type": "mute", "room": "vault", "user": 2}),
        4,
    )
    .await;
    assert_eq!(ack["type"], "mute_ack", "{ack}");
    let refused = send_until(&mut guest, "vault", true, 200).await;
    assert_eq!(
        refused["data"]["message"], "you are muted in room 'vault'",
        "node b's cache learned the mute: {refused}"
    );
    let ack = ask(
        &mut owner,
        json!({"type": "unmute", "room": "vault", "user": 2}),
        5,
    )
    .await;
    assert_eq!(ack["type"], "unmute_ack", "{ack}");
    let back = send_until(&mut guest, "vault", false, 300).await;
    assert_eq!(back["type"], "message", "{back}");
    finish(nodes, db).await;
}
