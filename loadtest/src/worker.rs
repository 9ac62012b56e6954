//! One worker: opens its share of the connections on a small tokio runtime, runs the
//! traffic phase when told, and reports progress and results to the coordinator.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::conn;
use crate::hist::{self, HistPairs};
use crate::ipc::{FromWorker, Progress, Ready, StartCmd, ToWorker, WorkerResult, WorkerSpec};
use crate::plan::RunParams;
use crate::stats::{Counters, ErrorLog};
use crate::sysinfo::{self_cpu_us, unix_nanos};
use crate::target::Target;

/// Interval of progress events.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Interval of progress events once sending is over.
const DRAIN_TICK: Duration = Duration::from_millis(100);

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// A sender's shared state between its send loop and its connection's reader.
#[derive(Debug)]
pub struct SenderState {
    /// Delivery group of the sender.
    pub group: u32,
    /// Messages sent.
    pub sent: AtomicU64,
    /// Messages the server refused (busy errors).
    pub rejected: AtomicU64,
    /// In-flight permits (saturation mode), released by the sender's own echoes.
    pub permits: Semaphore,
}

/// The measured window as seen by the hot path (Unix nanos).
#[derive(Debug)]
pub struct Window {
    /// Start of the measured window (u64::MAX before the start).
    pub start_ns: AtomicU64,
    /// End of the measured window (0 before the start).
    pub end_ns: AtomicU64,
}

/// State shared by all tasks of one worker.
pub struct WorkerCtx {
    /// Run parameters.
    pub params: RunParams,
    /// Validated targets (connection i uses target i % n).
    pub targets: Vec<Target>,
    /// Live counters.
    pub counters: Counters,
    /// Latency histograms, one per runtime thread.
    pub latency: Vec<Mutex<Histogram<u64>>>,
    /// Handshake latencies.
    pub handshake: Mutex<Histogram<u64>>,
    /// Reconnect storm: handshake (+ join) latencies of the reconnections.
    pub reconnect_handshake: Mutex<Histogram<u64>>,
    /// Reconnect storm: when the last reconnection finished (Unix nanos).
    pub reconnect_last_ns: AtomicU64,
    /// How late open-loop sends left the client after their scheduled time.
    pub send_lag: Mutex<Histogram<u64>>,
    /// Errors by kind.
    pub errors: Mutex<ErrorLog>,
    /// Connections per shard header value.
    pub shards: Mutex<BTreeMap<String, u64>>,
    /// Joined members per group.
    pub group_members: Mutex<HashMap<u32, u64>>,
    /// All senders of this worker.
    pub senders: Mutex<Vec<Arc<SenderState>>>,
    /// Open-loop senders' write halves, taken by the pacing thread.
    pub paced: Mutex<Vec<crate::pacer::Paced>>,
    /// The scheduling the pacing thread got (`fifo`, `nice-20`, `normal`).
    pub pacer_priority: Mutex<Option<&'static str>>,
    /// Measured window.
    pub window: Window,
    /// Published once when the traffic phase starts.
    pub start: watch::Receiver<Option<StartCmd>>,
    /// Connections whose setup has finished (either way).
    pub setup_done: AtomicU64,
    /// Sender loops still running.
    pub senders_running: AtomicU64,
    /// Limits concurrent handshakes.
    pub connect_gate: Semaphore,
}

impl WorkerCtx {
    /// Records a latency sample in this thread's histogram.
    pub fn record_latency(&self, us: u64) {
        let shard = SHARD.with(|s| s.get()) % self.latency.len();
        if let Ok(mut h) = self.latency[shard].lock() {
            h.saturating_record(us.max(1));
        }
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str, message: String) {
        if let Ok(mut log) = self.errors.lock() {
            log.record(kind, message);
        }
    }

    fn latency_pairs(&self) -> HistPairs {
        let mut merged = hist::new_us();
        for shard in &self.latency {
            if let Ok(h) = shard.lock() {
                let _ = merged.add(&*h);
            }
        }
        HistPairs::from_hist(&merged)
    }

    fn progress(&self) -> FromWorker {
        FromWorker::Progress(Progress {
            counts: self.counters.snapshot(),
            latency: self.latency_pairs(),
        })
    }

    fn group_sent(&self, minus_rejected: bool) -> Vec<(u32, u64)> {
        let mut per: BTreeMap<u32, u64> = BTreeMap::new();
        for s in self.senders.lock().map(|v| v.clone()).unwrap_or_default() {
            let mut n = s.sent.load(Relaxed);
            if minus_rejected {
                n = n.saturating_sub(s.rejected.load(Relaxed));
            }
            *per.entry(s.group).or_default() += n;
        }
        per.into_iter().collect()
    }
}

/// Runs one worker to completion on its own runtime.
pub fn run(
    spec: WorkerSpec,
    commands: mpsc::Receiver<ToWorker>,
    events: mpsc::Sender<FromWorker>,
) -> anyhow::Result<()> {
    let threads = spec.params.threads.max(1);
    let (soft, hard) = crate::fdlimit::raise_to_hard().context("raising RLIMIT_NOFILE")?;
    let mine = u64::from(spec.params.worker_range(spec.index).len() as u32);
    if mine > crate::fdlimit::max_connections(soft) {
        anyhow::bail!(
            "worker {} needs {mine} connections but its fd limit is {soft} (hard {hard})",
            spec.index
        );
    }
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        let next = Arc::new(AtomicUsize::new(0));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .on_thread_start(move || {
                let i = next.fetch_add(1, Relaxed);
                SHARD.with(|s| s.set(i));
            })
            .build()?
    };
    let result = rt.block_on(worker_main(spec, threads, commands, events));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn worker_main(
    spec: WorkerSpec,
    threads: usize,
    mut commands: mpsc::Receiver<ToWorker>,
    events: mpsc::Sender<FromWorker>,
) -> anyhow::Result<()> {
    let params = spec.params;
    let targets = params
        .url
        .split(',')
        .map(Target::parse)
        .collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!targets.is_empty(), "no target");
    let range = params.worker_range(spec.index);
    let (start_tx, start_rx) = watch::channel(None);
    let ctx = Arc::new(WorkerCtx {
        latency: (0..threads).map(|_| Mutex::new(hist::new_us())).collect(),
        handshake: Mutex::new(hist::new_us()),
        reconnect_handshake: Mutex::new(hist::new_us()),
        reconnect_last_ns: AtomicU64::new(0),
        send_lag: Mutex::new(hist::new_us()),
        errors: Mutex::default(),
        shards: Mutex::default(),
        group_members: Mutex::default(),
        senders: Mutex::default(),
        paced: Mutex::default(),
        pacer_priority: Mutex::default(),
        counters: Counters::default(),
        window: Window {
            start_ns: AtomicU64::new(u64::MAX),
            end_ns: AtomicU64::new(0),
        },
        start: start_rx,
        setup_done: AtomicU64::new(0),
        senders_running: AtomicU64::new(0),
        connect_gate: Semaphore::new(params.connect_concurrency.max(1)),
        targets,
        params,
    });

    // Setup phase.
    let began = Instant::now();
    let minter = Arc::new(crate::auth::TokenMinter::new(&ctx.params.jwt_secret));
    for i in range.clone() {
        tokio::spawn(conn::run(ctx.clone(), minter.clone(), i));
    }
    let total = u64::from(range.end - range.start);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        if ctx.setup_done.load(Relaxed) >= total {
            break;
        }
        tokio::select! {
            _ = tick.tick() => { let _ = events.send(ctx.progress()).await; }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            cmd = commands.recv() => match cmd {
                Some(ToWorker::Start(_)) => {}
                Some(ToWorker::Stop) | None => return finish(&ctx, &events, None).await,
            },
        }
    }
    let connect_elapsed_us = began.elapsed().as_micros() as u64;
    let ready = Ready {
        counts: ctx.counters.snapshot(),
        group_members: ctx
            .group_members
            .lock()
            .map(|m| m.iter().map(|(g, n)| (*g, *n)).collect())
            .unwrap_or_default(),
        handshake: ctx
            .handshake
            .lock()
            .map(|h| HistPairs::from_hist(&h))
            .unwrap_or_default(),
        connect_elapsed_us,
    };
    let _ = events.send(FromWorker::Ready(ready)).await;

    // Wait for the start.
    let start = loop {
        tokio::select! {
            _ = tick.tick() => { let _ = events.send(ctx.progress()).await; }
            cmd = commands.recv() => match cmd {
                Some(ToWorker::Start(s)) => break s,
                Some(ToWorker::Stop) | None => return finish(&ctx, &events, None).await,
            },
        }
    };
    ctx.window.end_ns.store(start.send_end_ns, Relaxed);
    ctx.window.start_ns.store(start.measure_start_ns, Relaxed);
    let _ = start_tx.send(Some(start));
    let open_loop = ctx.params.scenario.traffic().is_some_and(|t| t.rate > 0.0);
    if open_loop && ctx.params.senders() > 0 {
        crate::pacer::spawn(ctx.clone(), start).context("starting the pacing thread")?;
    }

    // CPU over the measured window (the end is taken at Stop if that comes first).
    let cpu = Arc::new(Mutex::new((None, None)));
    {
        let cpu = cpu.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(instant_at(start.measure_start_ns)).await;
            if let Ok(mut w) = cpu.lock() {
                w.0 = Some(self_cpu_us());
            }
            tokio::time::sleep_until(instant_at(start.send_end_ns)).await;
            if let Ok(mut w) = cpu.lock() {
                w.1 = Some(self_cpu_us());
            }
        });
    }

    let deadline = tokio::time::sleep_until(instant_at(start.deadline_ns));
    tokio::pin!(deadline);
    let mut send_done = ctx.params.senders() == 0;
    // Progress every second while sending, every DRAIN_TICK once sending is over, so the
    // coordinator can end the drain as soon as everything has arrived.
    let mut fast = tokio::time::interval(DRAIN_TICK);
    let mut next_progress = tokio::time::Instant::now() + PROGRESS_EVERY;
    loop {
        tokio::select! {
            _ = fast.tick() => {
                let now = tokio::time::Instant::now();
                let draining = unix_nanos() >= start.send_end_ns;
                if !send_done && draining && ctx.senders_running.load(Relaxed) == 0 {
                    send_done = true;
                    let _ = events.send(FromWorker::SendDone { group_sent: ctx.group_sent(true) }).await;
                }
                if draining || now >= next_progress {
                    next_progress = now + PROGRESS_EVERY;
                    let _ = events.send(ctx.progress()).await;
                }
            }
            _ = &mut deadline => break,
            cmd = commands.recv() => match cmd {
                Some(ToWorker::Start(_)) => {}
                Some(ToWorker::Stop) | None => break,
            },
        }
    }
    let window = cpu.lock().map(|w| *w).unwrap_or_default();
    let cpu_window_us = match window {
        (Some(c0), c1) => c1.unwrap_or_else(self_cpu_us).saturating_sub(c0),
        (None, _) => 0,
    };
    finish(&ctx, &events, Some(cpu_window_us)).await
}

async fn finish(
    ctx: &WorkerCtx,
    events: &mpsc::Sender<FromWorker>,
    cpu_window_us: Option<u64>,
) -> anyhow::Result<()> {
    let counts = ctx.counters.snapshot();
    let result = WorkerResult {
        counts,
        latency: ctx.latency_pairs(),
        handshake: ctx
            .handshake
            .lock()
            .map(|h| HistPairs::from_hist(&h))
            .unwrap_or_default(),
        send_lag: ctx
            .send_lag
            .lock()
            .map(|h| HistPairs::from_hist(&h))
            .unwrap_or_default(),
        group_sent_ok: ctx.group_sent(true),
        cpu_window_us: cpu_window_us.unwrap_or(0),
        delivered_window: counts.delivered_measured,
        errors: ctx.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        shards: ctx.shards.lock().map(|s| s.clone()).unwrap_or_default(),
        reconnect_handshake: ctx
            .reconnect_handshake
            .lock()
            .map(|h| HistPairs::from_hist(&h))
            .unwrap_or_default(),
        reconnect_last_ns: ctx.reconnect_last_ns.load(Relaxed),
        pacer_priority: ctx
            .pacer_priority
            .lock()
            .ok()
            .and_then(|p| p.map(str::to_owned)),
    };
    events
        .send(FromWorker::Result(Box::new(result)))
        .await
        .map_err(|_| anyhow::anyhow!("coordinator gone"))
}

/// The tokio instant at Unix time `ns` (now if it is in the past).
pub fn instant_at(ns: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_nanos(ns.saturating_sub(unix_nanos()))
}
