//! Open-loop sending from one pacing thread per worker (issue 16).
//!
//! With one timer-driven task per sender on the same runtime as the
//! receivers, a due send waited behind every reader task woken at the same
//! time (and behind tokio's 1 ms timer tick): at 100k frames/s the client's
//! own send lag reached 10-35 ms and hid the server's latency. Here one OS
//! thread owns every sender's write half of this worker, sleeps until the
//! next due time of the whole schedule (`std::thread::sleep`, about 0.1 ms
//! late at most on an idle core) and writes the message itself: the
//! receivers' runtime never delays a send. A write that the socket cannot
//! take at once (server back-pressure) parks the thread until the reactor
//! of the worker's runtime wakes it, so that lag is still measured.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::ipc::StartCmd;
use crate::net::Ws;
use crate::payload::{self, Payload};
use crate::schedule::Schedule;
use crate::sysinfo::unix_nanos;
use crate::worker::{SenderState, WorkerCtx};

/// A sender handed to the pacing thread.
pub struct Paced {
    /// Global connection index of the sender.
    pub index: u32,
    /// Its shared counters.
    pub state: Arc<SenderState>,
    /// Its connection's write half.
    pub sink: SplitSink<Ws, Message>,
    /// The request up to the content's opening quote.
    pub prefix: String,
}

/// Starts the pacing thread of this worker: it takes the senders registered
/// in `ctx.paced` at `start.start_ns` and sends on the open-loop schedule
/// until `start.send_end_ns`.
pub fn spawn(ctx: Arc<WorkerCtx>, start: StartCmd) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            let priority = raise_priority();
            if let Ok(mut p) = ctx.pacer_priority.lock() {
                *p = Some(priority);
            }
            run(&ctx, start)
        })
        .map(|_| ())
}

/// Asks the OS to run this thread ahead of the others when it wakes: it
/// sleeps nearly all the time, and a send late because every core was busy
/// (the server, the receivers, other processes) would be counted as the
/// server's latency. Real-time FIFO priority 1 when allowed, else nice -20,
/// else as it is; the answer goes to the report (`pacer_priority`).
fn raise_priority() -> &'static str {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain syscalls on the calling thread (pid 0), with a valid
    // parameter block.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 {
            return "fifo";
        }
        let tid = libc::gettid() as libc::id_t;
        if libc::setpriority(libc::PRIO_PROCESS, tid, -20) == 0 {
            return "nice-20";
        }
    }
    "normal"
}

fn sleep_until_ns(due: u64) {
    let now = unix_nanos();
    if due > now {
        std::thread::sleep(Duration::from_nanos(due - now));
    }
}

fn run(ctx: &WorkerCtx, start: StartCmd) {
    sleep_until_ns(start.start_ns);
    let mut senders: Vec<Paced> = ctx
        .paced
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    senders.sort_by_key(|s| s.index);
    let count = senders.len() as u64;
    let p = &ctx.params;
    let traffic = p.scenario.traffic().cloned();
    let (rate, len) = traffic.map_or((0.0, 0), |t| (t.rate, t.payload));
    let schedules: Vec<Schedule> = senders
        .iter()
        .map(|s| {
            Schedule::new(
                start.start_ns,
                start.send_end_ns,
                rate,
                s.index,
                p.senders(),
            )
        })
        .collect();
    let mut alive = vec![true; senders.len()];
    let mut content = String::with_capacity(len + 32);
    // Message n = j + k*S is due at start + n/rate: round k, senders in
    // ascending order, is the global order of due times.
    'rounds: for k in 0.. {
        for (j, s) in senders.iter_mut().enumerate() {
            let Some(due) = schedules[j].at(k) else {
                break 'rounds;
            };
            if !alive[j] {
                continue;
            }
            sleep_until_ns(due);
            let payload = Payload {
                sender: s.index,
                seq: k,
                sent_unix_nanos: due,
            };
            payload::encode_into(&mut content, &payload, len);
            let mut text = String::with_capacity(s.prefix.len() + content.len() + 2);
            text.push_str(&s.prefix);
            text.push_str(&content);
            text.push_str("\"}");
            if let Err(e) = block_on(s.sink.send(Message::text(text))) {
                ctx.counters.send_errors.fetch_add(1, Relaxed);
                ctx.error("send", format!("connection {}: {e}", s.index));
                alive[j] = false;
                continue;
            }
            if due >= start.measure_start_ns {
                let lag_us = unix_nanos().saturating_sub(due) / 1000;
                if let Ok(mut h) = ctx.send_lag.lock() {
                    h.saturating_record(lag_us.max(1));
                }
                ctx.counters.sent_measured.fetch_add(1, Relaxed);
            }
            s.state.sent.fetch_add(1, Relaxed);
            ctx.counters.sent.fetch_add(1, Relaxed);
        }
    }
    ctx.senders_running.fetch_sub(count, Relaxed);
}

/// Wakes the pacing thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `f` on this thread, parking while it is pending (the worker's
/// runtime, which drives the sockets' reactor, wakes it).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
