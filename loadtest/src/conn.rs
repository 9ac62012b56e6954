//! One client connection: setup (handshake, room join), the receive loop that scores
//! every chat frame, and, for senders, the send loop.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::auth::TokenMinter;
use crate::frame::{self, Frame};
use crate::ipc::StartCmd;
use crate::net::{self, Ws};
use crate::pacer::Paced;
use crate::payload::{self, Payload};
use crate::plan::{self, Scenario};
use crate::seq::{Seen, SeqTracker};
use crate::sysinfo::unix_nanos;
use crate::worker::{instant_at, SenderState, WorkerCtx};

/// Runs connection `i` of the run until the worker shuts down.
pub async fn run(ctx: Arc<WorkerCtx>, minter: Arc<TokenMinter>, i: u32) {
    let ws = connect_gated(&ctx, &minter, i, false).await;
    if ws.is_some() {
        ctx.counters.connect_ok.fetch_add(1, Relaxed);
    } else {
        ctx.counters.connect_failed.fetch_add(1, Relaxed);
    }
    ctx.setup_done.fetch_add(1, Relaxed);
    let Some(mut ws) = ws else { return };

    match &ctx.params.scenario {
        Scenario::Connect { close: true } => {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        }
        Scenario::Connect { .. } | Scenario::Idle { .. } => {
            ctx.counters.open.fetch_add(1, Relaxed);
            hold(&ctx, ws).await;
        }
        Scenario::Reconnect { .. } => {
            ctx.counters.open.fetch_add(1, Relaxed);
            reconnect(&ctx, &minter, i, ws).await;
        }
        Scenario::Room { .. } | Scenario::Dm { .. } => {
            ctx.counters.open.fetch_add(1, Relaxed);
            let group = ctx.params.group_of(i);
            if let Ok(mut m) = ctx.group_members.lock() {
                *m.entry(group).or_default() += 1;
            }
            if !ctx.params.is_sender(i) {
                // Read-only: no split (and no lock shared with a sink per frame).
                receive_loop(&ctx, ws, i, None).await;
                return;
            }
            let (sink, stream) = ws.split();
            let traffic = ctx.params.scenario.traffic().cloned();
            let inflight = traffic.as_ref().map_or(1, |t| t.inflight) as usize;
            let open_loop = traffic.is_some_and(|t| t.rate > 0.0);
            let state = Arc::new(SenderState {
                group,
                sent: Default::default(),
                rejected: Default::default(),
                permits: Semaphore::new(inflight.max(1)),
            });
            if let Ok(mut v) = ctx.senders.lock() {
                v.push(state.clone());
            }
            ctx.senders_running.fetch_add(1, Relaxed);
            if open_loop {
                // The worker's pacing thread sends (see `pacer`).
                let paced = Paced {
                    index: i,
                    state: state.clone(),
                    sink,
                    prefix: request_prefix(&ctx, i),
                };
                if let Ok(mut v) = ctx.paced.lock() {
                    v.push(paced);
                }
            } else {
                tokio::spawn(send_loop(ctx.clone(), state.clone(), sink, i));
            }
            receive_loop(&ctx, stream, i, Some(&state)).await;
        }
    }
}

/// The request of sender `me` up to its content's opening quote.
fn request_prefix(ctx: &WorkerCtx, me: u32) -> String {
    let p = &ctx.params;
    match &p.scenario {
        Scenario::Room { .. } => format!(
            r#"{{"type":"message","room":"{}","content":""#,
            p.room_name(p.group_of(me)).unwrap_or_default()
        ),
        _ => format!(
            r#"{{"type":"dm","to":{},"content":""#,
            p.partner(me).map(|q| p.user_id(q)).unwrap_or_default()
        ),
    }
}

/// Sets connection `i` up (at most --connect-concurrency at once, within
/// --connect-timeout); failures are logged. `again`: a reconnection, whose
/// handshake goes to its own histogram.
async fn connect_gated(ctx: &WorkerCtx, minter: &TokenMinter, i: u32, again: bool) -> Option<Ws> {
    let Ok(_permit) = ctx.connect_gate.acquire().await else {
        return None;
    };
    let timeout = Duration::from_secs_f64(ctx.params.connect_timeout.max(0.001));
    match tokio::time::timeout(timeout, setup(ctx, minter, i, again)).await {
        Ok(Ok(ws)) => Some(ws),
        Ok(Err((kind, msg))) => {
            ctx.error(&kind, msg);
            None
        }
        Err(_) => {
            ctx.error(
                "connect_timeout",
                format!("connection {i}: setup timed out"),
            );
            None
        }
    }
}

/// Reconnect storm: at the start every connection closes (TCP FIN, as when
/// a network or a load balancer drops them all) and sets itself up again
/// (handshake and `join`), then counts the presence frames it receives.
async fn reconnect(ctx: &WorkerCtx, minter: &TokenMinter, i: u32, ws: Ws) {
    let mut start_rx = ctx.start.clone();
    let Ok(start) = start_rx.wait_for(|s| s.is_some()).await.map(|s| *s) else {
        return;
    };
    let Some(start) = start else { return };
    tokio::time::sleep_until(instant_at(start.start_ns)).await;
    drop(ws);
    ctx.counters.open.fetch_sub(1, Relaxed);
    let Some(ws) = connect_gated(ctx, minter, i, true).await else {
        ctx.counters.reconnect_failed.fetch_add(1, Relaxed);
        return;
    };
    ctx.counters.reconnect_ok.fetch_add(1, Relaxed);
    ctx.reconnect_last_ns.fetch_max(unix_nanos(), Relaxed);
    ctx.counters.open.fetch_add(1, Relaxed);
    receive_loop(ctx, ws, i, None).await;
}

/// Handshake and, in the room scenarios, join; errors come back as (kind, message).
async fn setup(
    ctx: &WorkerCtx,
    minter: &TokenMinter,
    i: u32,
    again: bool,
) -> Result<Ws, (String, String)> {
    let p = &ctx.params;
    let token = minter
        .mint(p.user_id(i), &format!("lt{i}"))
        .map_err(|e| ("token".to_string(), e.to_string()))?;
    let source = plan::source_ip(i, p.source_ips);
    // Contiguous blocks: the members of every room are spread over all targets.
    let n = ctx.targets.len() as u64;
    let block = (u64::from(i) * n / u64::from(p.connections.max(1))).min(n - 1);
    let target = &ctx.targets[block as usize];
    let connected = net::connect(target.addr, &target.url, &token, p.token_in_query, source)
        .await
        .map_err(|e| (e.kind(), format!("connection {i}: {e}")))?;
    let hist = if again {
        &ctx.reconnect_handshake
    } else {
        &ctx.handshake
    };
    if let Ok(mut h) = hist.lock() {
        h.saturating_record(connected.handshake_us.max(1));
    }
    let shard = connected
        .shard
        .map_or_else(|| "none".to_string(), |s| s.to_string());
    if let Ok(mut s) = ctx.shards.lock() {
        *s.entry(shard).or_default() += 1;
    }
    let mut ws = connected.ws;
    if let Some(room) = p.room_name(p.group_of(i)) {
        join(&mut ws, &room).await.map_err(|m| {
            (
                "join".to_string(),
                format!("connection {i} joining {room}: {m}"),
            )
        })?;
    }
    Ok(ws)
}

async fn join(ws: &mut Ws, room: &str) -> Result<(), String> {
    let msg = serde_json::json!({"type": "join", "room": room}).to_string();
    ws.send(Message::text(msg))
        .await
        .map_err(|e| e.to_string())?;
    while let Some(m) = ws.next().await {
        match m.map_err(|e| e.to_string())? {
            Message::Text(t) => match frame::scan(t.as_str()) {
                Frame::JoinAck => return Ok(()),
                Frame::Error(e) => return Err(format!("server error: {e}")),
                _ => {}
            },
            Message::Close(c) => return Err(format!("closed: {c:?}")),
            _ => {}
        }
    }
    Err("connection closed before join_ack".into())
}

/// Keeps an idle connection open, answering pings, until the worker shuts down.
async fn hold(ctx: &WorkerCtx, mut ws: Ws) {
    while let Some(m) = ws.next().await {
        match m {
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(e) => {
                ctx.error("disconnect", e.to_string());
                break;
            }
        }
    }
    ctx.counters.open.fetch_sub(1, Relaxed);
    ctx.counters.disconnects.fetch_add(1, Relaxed);
}

/// Scores every frame received on one connection.
async fn receive_loop<S>(ctx: &WorkerCtx, mut stream: S, me: u32, sender: Option<&SenderState>)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let c = &ctx.counters;
    let mut tracker = SeqTracker::default();
    while let Some(m) = stream.next().await {
        let text = match m {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(frame)) => {
                ctx.error(
                    "disconnect",
                    format!("connection {me}: server closed: {frame:?}"),
                );
                break;
            }
            Ok(_) => continue,
            Err(e) => {
                ctx.error("disconnect", format!("connection {me}: {e}"));
                break;
            }
        };
        match frame::scan(text.as_str()) {
            Frame::Chat(content) => {
                let now = unix_nanos();
                let w_start = ctx.window.start_ns.load(Relaxed);
                let w_end = ctx.window.end_ns.load(Relaxed);
                c.delivered.fetch_add(1, Relaxed);
                if now >= w_start && now < w_end {
                    c.delivered_measured.fetch_add(1, Relaxed);
                }
                let Some(p) = payload::decode(&content) else {
                    c.foreign.fetch_add(1, Relaxed);
                    continue;
                };
                match tracker.observe(p.sender, p.seq) {
                    Seen::New => {}
                    Seen::OutOfOrder => {
                        c.out_of_order.fetch_add(1, Relaxed);
                    }
                    Seen::Duplicate => {
                        c.dup.fetch_add(1, Relaxed);
                        continue;
                    }
                }
                c.unique.fetch_add(1, Relaxed);
                if p.sender == me {
                    if let Some(s) = sender {
                        s.permits.add_permits(1);
                    }
                }
                if p.sent_unix_nanos >= w_start && p.sent_unix_nanos < w_end {
                    ctx.record_latency(now.saturating_sub(p.sent_unix_nanos) / 1000);
                }
            }
            Frame::Error(msg) => {
                c.server_errors.fetch_add(1, Relaxed);
                let busy = msg.contains("busy");
                if busy {
                    c.server_busy.fetch_add(1, Relaxed);
                }
                if let Some(s) = sender {
                    if busy {
                        s.rejected.fetch_add(1, Relaxed);
                    }
                    s.permits.add_permits(1);
                }
                ctx.error("server_error", msg);
            }
            Frame::Presence => count_presence(ctx, 1, false),
            Frame::PresenceBatch(n) => count_presence(ctx, n, true),
            Frame::JoinAck | Frame::Other => {}
            Frame::Malformed => {
                c.malformed.fetch_add(1, Relaxed);
            }
        }
    }
    c.open.fetch_sub(1, Relaxed);
    c.disconnects.fetch_add(1, Relaxed);
}

/// Counts a presence frame carrying `changes` users' changes, once the
/// measured window has begun.
fn count_presence(ctx: &WorkerCtx, changes: u32, batch: bool) {
    if unix_nanos() < ctx.window.start_ns.load(Relaxed) {
        return;
    }
    let c = &ctx.counters;
    c.presence_frames.fetch_add(1, Relaxed);
    c.presence_batches.fetch_add(u64::from(batch), Relaxed);
    c.presence_changes.fetch_add(u64::from(changes), Relaxed);
}

/// Sends this connection's messages as fast as permits allow (saturation;
/// open-loop senders are sent by the worker's pacing thread).
async fn send_loop(
    ctx: Arc<WorkerCtx>,
    state: Arc<SenderState>,
    mut sink: SplitSink<Ws, Message>,
    me: u32,
) {
    let mut start_rx = ctx.start.clone();
    let start: StartCmd = match start_rx.wait_for(|s| s.is_some()).await {
        Ok(s) => s.expect("checked by wait_for"),
        Err(_) => {
            ctx.senders_running.fetch_sub(1, Relaxed);
            return;
        }
    };
    let p = &ctx.params;
    let traffic = p
        .scenario
        .traffic()
        .cloned()
        .expect("sender in a traffic scenario");
    let prefix = request_prefix(&ctx, me);
    let mut content = String::with_capacity(traffic.payload + 32);
    tokio::time::sleep_until(instant_at(start.start_ns)).await;
    let mut k: u64 = 0;
    loop {
        let acquired =
            tokio::time::timeout_at(instant_at(start.send_end_ns), state.permits.acquire()).await;
        match acquired {
            Ok(Ok(permit)) => permit.forget(),
            _ => break,
        }
        let stamp = unix_nanos();
        if stamp >= start.send_end_ns {
            break;
        }
        let payload = Payload {
            sender: me,
            seq: k,
            sent_unix_nanos: stamp,
        };
        payload::encode_into(&mut content, &payload, traffic.payload);
        let mut text = String::with_capacity(prefix.len() + content.len() + 2);
        text.push_str(&prefix);
        text.push_str(&content);
        text.push_str("\"}");
        if let Err(e) = sink.send(Message::text(text)).await {
            ctx.counters.send_errors.fetch_add(1, Relaxed);
            ctx.error("send", format!("connection {me}: {e}"));
            break;
        }
        state.sent.fetch_add(1, Relaxed);
        ctx.counters.sent.fetch_add(1, Relaxed);
        if stamp >= start.measure_start_ns {
            ctx.counters.sent_measured.fetch_add(1, Relaxed);
        }
        k += 1;
    }
    ctx.senders_running.fetch_sub(1, Relaxed);
}
