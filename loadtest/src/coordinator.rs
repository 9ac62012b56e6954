//! Runs one load-test run: starts the workers, paces the phases, prints progress, and
//! merges the workers' results with the server's CPU and RSS into a [`RunReport`].

use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;

use crate::hist::{self, fmt_us, Percentiles};
use crate::ipc::{FromWorker, Progress, StartCmd, ToWorker, WorkerResult, WorkerSet};
use crate::plan::{RunParams, Scenario};
use crate::report::RunReport;
use crate::stats::{Counts, ErrorLog};
use crate::sysinfo::{self, unix_nanos};
use crate::worker::instant_at;

/// Delay between sending Start and the first scheduled send.
const START_LEAD: Duration = Duration::from_millis(300);
/// Time workers get past the drain bound before they stop by themselves.
const WORKER_GRACE: Duration = Duration::from_secs(5);

/// Coordinator options that are not part of what workers run.
#[derive(Debug, Clone, Default)]
pub struct Observe {
    /// Server processes to sample (figures are summed).
    pub server_pid: Vec<u32>,
    /// Suppress the progress line.
    pub quiet: bool,
    /// RLIMIT_NOFILE hard limit.
    pub fd_hard_limit: u64,
}

#[derive(Default)]
struct Live {
    progress: Vec<Progress>,
    ready: Vec<bool>,
    send_done: Vec<Option<Vec<(u32, u64)>>>,
    results: Vec<Option<WorkerResult>>,
    group_members: Vec<u64>,
    handshake: Option<Histogram<u64>>,
    connect_elapsed_us: u64,
    fatal: Vec<String>,
}

impl Live {
    fn new(workers: usize, groups: u32) -> Live {
        Live {
            progress: vec![Progress::default(); workers],
            ready: vec![false; workers],
            send_done: vec![None; workers],
            results: (0..workers).map(|_| None).collect(),
            group_members: vec![0; groups as usize],
            handshake: Some(hist::new_us()),
            ..Live::default()
        }
    }

    fn apply(&mut self, w: usize, ev: FromWorker) {
        match ev {
            FromWorker::Progress(p) => self.progress[w] = p,
            FromWorker::Ready(r) => {
                self.ready[w] = true;
                self.progress[w].counts = r.counts;
                for (g, n) in r.group_members {
                    if let Some(m) = self.group_members.get_mut(g as usize) {
                        *m += n;
                    }
                }
                if let Some(h) = self.handshake.as_mut() {
                    r.handshake.add_to(h);
                }
                self.connect_elapsed_us = self.connect_elapsed_us.max(r.connect_elapsed_us);
            }
            FromWorker::SendDone { group_sent } => self.send_done[w] = Some(group_sent),
            FromWorker::Result(r) => {
                self.progress[w].counts = r.counts;
                self.results[w] = Some(*r);
            }
            FromWorker::Fatal { error } => {
                self.fatal.push(format!("worker {w}: {error}"));
                // A dead worker will send nothing more: treat it as finished.
                self.ready[w] = true;
                self.send_done[w].get_or_insert_with(Vec::new);
                self.results[w].get_or_insert_with(WorkerResult::default);
            }
        }
    }

    fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for p in &self.progress {
            c.add(&p.counts);
        }
        c
    }

    fn latency(&self) -> Histogram<u64> {
        let mut h = hist::new_us();
        for p in &self.progress {
            p.latency.add_to(&mut h);
        }
        h
    }

    fn expected(&self, sent: &[Option<Vec<(u32, u64)>>]) -> u64 {
        sent.iter()
            .flatten()
            .flatten()
            .map(|(g, n)| n * self.group_members.get(*g as usize).copied().unwrap_or(0))
            .sum()
    }
}

/// Prints the once-a-second progress line.
struct Ticker {
    began: tokio::time::Instant,
    last: Counts,
    total: u32,
    quiet: bool,
}

impl Ticker {
    fn line(&mut self, live: &Live) {
        let c = live.counts();
        if !self.quiet {
            let p99 = Percentiles::of(&live.latency()).p99_us;
            eprintln!(
                "[{:>5.1}s] conns {}/{}  sent/s {}  delivered/s {}  p99 {}  errors {}",
                self.began.elapsed().as_secs_f64(),
                c.open.max(c.connect_ok.min(u64::from(self.total))),
                self.total,
                c.sent.saturating_sub(self.last.sent),
                c.delivered.saturating_sub(self.last.delivered),
                if p99 == 0 { "-".into() } else { fmt_us(p99) },
                c.errors()
            );
        }
        self.last = c;
    }
}

/// Runs one run of `params` and returns its report.
pub async fn run_once(params: &RunParams, obs: &Observe) -> anyhow::Result<RunReport> {
    let workers = params.procs.max(1) as usize;
    let rss_before = sysinfo::rss_kib_sum(&obs.server_pid);
    let mut set = WorkerSet::spawn(params, crate::worker::run)?;
    let mut live = Live::new(workers, params.groups());
    let mut ticker = Ticker {
        began: tokio::time::Instant::now(),
        last: Counts::default(),
        total: params.connections,
        quiet: obs.quiet,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;

    // Setup.
    while !live.ready.iter().all(|r| *r) {
        tokio::select! {
            _ = tick.tick() => ticker.line(&live),
            ev = set.events.recv() => match ev {
                Some((w, ev)) => live.apply(w, ev),
                None => anyhow::bail!("all workers are gone"),
            },
        }
    }
    if !live.fatal.is_empty() {
        set.broadcast(ToWorker::Stop).await;
        set.finish().await;
        anyhow::bail!("{}", live.fatal.join("; "));
    }
    let setup = live.counts();
    if !obs.quiet {
        eprintln!(
            "setup done: {} connected, {} failed in {:.2}s",
            setup.connect_ok,
            setup.connect_failed,
            live.connect_elapsed_us as f64 / 1e6
        );
    }
    let mut rss_after = None;
    if let Scenario::Idle { settle } = params.scenario {
        tokio::time::sleep(Duration::from_secs_f64(settle.max(0.0))).await;
        rss_after = sysinfo::rss_kib_sum(&obs.server_pid);
    } else {
        rss_after = rss_after.or_else(|| sysinfo::rss_kib_sum(&obs.server_pid));
    }

    // Traffic (or hold) phase.
    let now = unix_nanos();
    let ns = |s: f64| (s.max(0.0) * 1e9) as u64;
    let start_ns = now + START_LEAD.as_nanos() as u64;
    let (measure_start_ns, send_end_ns, drain_end_ns) = match params.scenario {
        Scenario::Connect { .. } => (start_ns, start_ns, start_ns),
        Scenario::Idle { .. } | Scenario::Reconnect { .. } => {
            let end = start_ns + ns(params.duration);
            (start_ns, end, end)
        }
        _ => {
            let m = start_ns + ns(params.warmup);
            let e = m + ns(params.duration);
            (m, e, e + ns(params.drain))
        }
    };
    let cmd = StartCmd {
        start_ns,
        measure_start_ns,
        send_end_ns,
        deadline_ns: drain_end_ns + WORKER_GRACE.as_nanos() as u64,
    };
    set.broadcast(ToWorker::Start(cmd)).await;
    let pids = obs.server_pid.clone();
    let server_cpu = (!pids.is_empty()).then(|| {
        tokio::spawn(async move {
            tokio::time::sleep_until(instant_at(measure_start_ns)).await;
            let c0 = sysinfo::process_cpu_us_sum(&pids);
            let own0 = sysinfo::self_cpu_us();
            tokio::time::sleep_until(instant_at(send_end_ns)).await;
            let c1 = sysinfo::process_cpu_us_sum(&pids);
            let own1 = sysinfo::self_cpu_us();
            (c0.zip(c1).map(|(a, b)| b.saturating_sub(a)), own1 - own0)
        })
    });

    let mut stopped = false;
    let mut drain_s = 0.0;
    let hard_end = instant_at(cmd.deadline_ns) + WORKER_GRACE;
    let drain_end = tokio::time::sleep_until(instant_at(drain_end_ns));
    tokio::pin!(drain_end);
    while !live.results.iter().all(Option::is_some) {
        tokio::select! {
            _ = tick.tick() => ticker.line(&live),
            ev = set.events.recv() => match ev {
                Some((w, ev)) => live.apply(w, ev),
                None => break,
            },
            _ = &mut drain_end, if !stopped => {}
            _ = tokio::time::sleep_until(hard_end) => {
                live.fatal.push("workers did not report in time".into());
                break;
            }
        }
        let now = unix_nanos();
        if !stopped && now >= send_end_ns {
            let all_sent = live.send_done.iter().all(Option::is_some);
            let complete = all_sent && live.counts().unique >= live.expected(&live.send_done);
            if complete || now >= drain_end_ns {
                drain_s = (now.min(drain_end_ns) - send_end_ns) as f64 / 1e9;
                set.broadcast(ToWorker::Stop).await;
                stopped = true;
            }
        }
    }
    if !stopped {
        set.broadcast(ToWorker::Stop).await;
    }
    set.finish().await;
    let (server_cpu_us, coord_cpu_us) = match server_cpu {
        Some(t) => t.await.unwrap_or((None, 0)),
        None => (None, 0),
    };
    if !live.fatal.is_empty() {
        eprintln!("warning: {}", live.fatal.join("; "));
    }
    Ok(build_report(
        params,
        obs,
        live,
        Extras {
            drain_s,
            start_ns,
            server_cpu_us,
            coord_cpu_us: if workers > 1 { coord_cpu_us } else { 0 },
            rss_before,
            rss_after,
        },
    ))
}

struct Extras {
    drain_s: f64,
    start_ns: u64,
    server_cpu_us: Option<u64>,
    coord_cpu_us: u64,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
}

fn build_report(params: &RunParams, obs: &Observe, mut live: Live, x: Extras) -> RunReport {
    let results: Vec<WorkerResult> = live.results.iter_mut().filter_map(Option::take).collect();
    let mut counts = Counts::default();
    let mut latency = hist::new_us();
    let mut send_lag = hist::new_us();
    let mut handshake = live.handshake.take().unwrap_or_else(hist::new_us);
    let mut errors = ErrorLog::default();
    let mut shards = std::collections::BTreeMap::new();
    let mut cpu_us = x.coord_cpu_us;
    let mut group_sent = Vec::new();
    let mut reconnect_handshake = hist::new_us();
    let mut reconnect_last_ns = 0;
    let mut pacer_priority = None;
    for r in &results {
        r.reconnect_handshake.add_to(&mut reconnect_handshake);
        reconnect_last_ns = reconnect_last_ns.max(r.reconnect_last_ns);
        pacer_priority = pacer_priority.or_else(|| r.pacer_priority.clone());
        counts.add(&r.counts);
        r.latency.add_to(&mut latency);
        r.send_lag.add_to(&mut send_lag);
        if live.connect_elapsed_us == 0 {
            r.handshake.add_to(&mut handshake);
        }
        errors.merge(&r.errors);
        for (k, v) in &r.shards {
            *shards.entry(k.clone()).or_insert(0) += v;
        }
        cpu_us += r.cpu_window_us;
        group_sent.push(Some(r.group_sent_ok.clone()));
    }
    for f in &live.fatal {
        errors.record("worker", f.clone());
    }
    let expected = live.expected(&group_sent);
    let lat = Percentiles::of(&latency);
    let traffic = params.scenario.traffic();
    let dur = params.duration.max(1e-9);
    let per_frame = |cpu: u64| {
        (counts.delivered_measured > 0).then(|| cpu as f64 / counts.delivered_measured as f64)
    };
    let handshakes_per_s = if live.connect_elapsed_us > 0 {
        counts.connect_ok as f64 / (live.connect_elapsed_us as f64 / 1e6)
    } else {
        0.0
    };
    let per_client = |n: u64| (counts.connect_ok > 0).then(|| n as f64 / counts.connect_ok as f64);
    let reconnecting = matches!(params.scenario, Scenario::Reconnect { .. });
    let rss_per_conn = match (x.rss_before, x.rss_after, &params.scenario) {
        (Some(b), Some(a), Scenario::Idle { .. }) if counts.connect_ok > 0 => {
            Some((a as f64 - b as f64) / counts.connect_ok as f64)
        }
        _ => None,
    };
    RunReport {
        scenario: params.scenario.name().into(),
        url: params.url.clone(),
        connections: params.connections,
        rooms: match &params.scenario {
            Scenario::Room { rooms, .. } => Some(*rooms),
            _ => None,
        },
        senders: params.senders(),
        rate: traffic.map(|t| t.rate),
        inflight: traffic.map(|t| t.inflight),
        payload: traffic.map(|t| t.payload),
        warmup_s: params.warmup,
        duration_s: params.duration,
        drain_limit_s: params.drain,
        drain_s: x.drain_s,
        threads: params.threads,
        procs: params.procs,
        source_ips: params.source_ips,
        connections_ok: counts.connect_ok,
        connections_failed: counts.connect_failed,
        connections_open_at_end: counts.open,
        handshakes_per_s,
        handshake_us: Percentiles::of(&handshake),
        send_lag_us: traffic
            .filter(|t| t.rate > 0.0)
            .map(|_| Percentiles::of(&send_lag)),
        sent: counts.sent_measured,
        sent_per_s: counts.sent_measured as f64 / dur,
        delivered: counts.delivered_measured,
        delivered_per_s: counts.delivered_measured as f64 / dur,
        latency_samples: lat.count,
        p50_us: lat.p50_us,
        p90_us: lat.p90_us,
        p99_us: lat.p99_us,
        p999_us: lat.p999_us,
        max_us: lat.max_us,
        mean_us: lat.mean_us,
        expected,
        received_unique: counts.unique,
        lost: expected.saturating_sub(counts.unique),
        dup: counts.dup,
        out_of_order: counts.out_of_order,
        foreign: counts.foreign,
        errors: counts.errors() + live.fatal.len() as u64,
        server_errors: counts.server_errors,
        server_busy: counts.server_busy,
        send_errors: counts.send_errors,
        disconnects: counts.disconnects,
        malformed: counts.malformed,
        error_kinds: errors.kinds,
        error_samples: errors.samples,
        client_cpu_us: cpu_us,
        client_cpu_us_per_frame: per_frame(cpu_us),
        client_cpu_pct: cpu_us as f64 / (dur * 1e6) * 100.0,
        server_cpu_us: x.server_cpu_us,
        server_cpu_us_per_frame: x.server_cpu_us.and_then(per_frame),
        server_cpu_pct: x.server_cpu_us.map(|c| c as f64 / (dur * 1e6) * 100.0),
        server_rss_kib_before: x.rss_before,
        server_rss_kib_after: x.rss_after,
        server_rss_kib_per_conn: rss_per_conn,
        shards,
        fd_hard_limit: obs.fd_hard_limit,
        pacer_priority,
        presence_frames: counts.presence_frames,
        presence_batches: counts.presence_batches,
        presence_changes: counts.presence_changes,
        presence_frames_per_client: per_client(counts.presence_frames),
        presence_changes_per_client: per_client(counts.presence_changes),
        reconnects_ok: counts.reconnect_ok,
        reconnects_failed: counts.reconnect_failed,
        reconnect_handshakes_per_s: reconnecting.then(|| {
            let secs = reconnect_last_ns.saturating_sub(x.start_ns) as f64 / 1e9;
            if secs > 0.0 {
                counts.reconnect_ok as f64 / secs
            } else {
                0.0
            }
        }),
        reconnect_handshake_us: reconnecting.then(|| Percentiles::of(&reconnect_handshake)),
    }
}

/// Reads the server's own open-file limit (soft) from /proc/<pid>/limits.
pub fn server_fd_limit(pid: u32) -> Option<u64> {
    let limits = rlimit::ProcLimits::read_process(pid as i32).ok()?;
    limits.max_open_files.and_then(|l| l.soft_limit)
}

/// Writes `report` as one JSON object to stdout and, if given, to `path`.
pub fn emit_json(
    value: &impl serde::Serialize,
    path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let text = serde_json::to_string(value)?;
    println!("{text}");
    if let Some(p) = path {
        std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
