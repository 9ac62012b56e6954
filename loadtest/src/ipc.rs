//! Coordinator <-> worker protocol and its two transports: an in-process thread with
//! bounded channels, or a re-executed child process speaking JSON lines on stdin/stdout.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::Stdio;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::hist::HistPairs;
use crate::plan::RunParams;
use crate::stats::{Counts, ErrorLog};

/// Hidden first argument that turns the binary into a worker.
pub const WORKER_FLAG: &str = "--internal-worker";

/// Capacity of every channel between coordinator and workers.
const CHANNEL_CAP: usize = 256;

/// First line a child worker reads: what to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// This worker's index.
    pub index: u32,
    /// The run.
    pub params: RunParams,
}

/// Timeline of the traffic phase, all in Unix nanoseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct StartCmd {
    /// Sending begins.
    pub start_ns: u64,
    /// End of warm-up: latencies and rates are measured from here.
    pub measure_start_ns: u64,
    /// Sending stops (end of the measured window).
    pub send_end_ns: u64,
    /// The worker stops by itself at this time if no Stop arrived.
    pub deadline_ns: u64,
}

/// Coordinator -> worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ToWorker {
    /// Begin the traffic phase.
    Start(StartCmd),
    /// Report the result and exit.
    Stop,
}

/// Periodic progress of one worker (cumulative).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Counters so far.
    pub counts: Counts,
    /// Measured-window latency histogram so far.
    pub latency: HistPairs,
}

/// Sent when every connection of the worker is set up (or failed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ready {
    /// Counters at that point.
    pub counts: Counts,
    /// Joined connections per delivery group (room or dm pair).
    pub group_members: Vec<(u32, u64)>,
    /// Handshake latencies.
    pub handshake: HistPairs,
    /// Microseconds from the first connection attempt to the last setup completion.
    pub connect_elapsed_us: u64,
}

/// Final result of one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Final counters.
    pub counts: Counts,
    /// Measured-window latency histogram.
    pub latency: HistPairs,
    /// Handshake latency histogram.
    pub handshake: HistPairs,
    /// Open-loop send lag histogram (actual send time - scheduled time).
    pub send_lag: HistPairs,
    /// Messages accepted per delivery group (sent minus those the server refused).
    pub group_sent_ok: Vec<(u32, u64)>,
    /// CPU microseconds this process used during the measured window.
    pub cpu_window_us: u64,
    /// Chat frames received during the measured window (same as counts.delivered_measured).
    pub delivered_window: u64,
    /// Errors by kind.
    pub errors: ErrorLog,
    /// Connections per `X-Chat-Shard` value.
    pub shards: BTreeMap<String, u64>,
    /// Reconnect storm: handshake (+ join) latencies of the reconnections.
    #[serde(default)]
    pub reconnect_handshake: HistPairs,
    /// Reconnect storm: when the last reconnection finished (Unix nanos; 0: none).
    #[serde(default)]
    pub reconnect_last_ns: u64,
    /// Scheduling of the pacing thread (`fifo`, `nice-20`, `normal`; open loop only).
    #[serde(default)]
    pub pacer_priority: Option<String>,
}

/// Worker -> coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FromWorker {
    /// Periodic progress.
    Progress(Progress),
    /// Setup finished.
    Ready(Ready),
    /// All senders finished; messages sent per group so far.
    SendDone {
        /// Messages sent per group.
        group_sent: Vec<(u32, u64)>,
    },
    /// Final result.
    Result(Box<WorkerResult>),
    /// The worker failed.
    Fatal {
        /// What went wrong.
        error: String,
    },
}

/// Body of a worker: runs with its command receiver and event sender.
pub type WorkerFn =
    fn(WorkerSpec, mpsc::Receiver<ToWorker>, mpsc::Sender<FromWorker>) -> anyhow::Result<()>;

/// The coordinator's handles on its workers.
pub struct WorkerSet {
    /// One command sender per worker.
    pub commands: Vec<mpsc::Sender<ToWorker>>,
    /// Events of all workers, tagged with the worker index.
    pub events: mpsc::Receiver<(usize, FromWorker)>,
    children: Vec<tokio::process::Child>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl WorkerSet {
    /// Starts `params.procs` workers: in this process when 1, as child processes otherwise.
    pub fn spawn(params: &RunParams, body: WorkerFn) -> anyhow::Result<WorkerSet> {
        let (ev_tx, events) = mpsc::channel(CHANNEL_CAP);
        let mut set = WorkerSet {
            commands: Vec::new(),
            events,
            children: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..params.procs {
            let spec = WorkerSpec {
                index,
                params: params.clone(),
            };
            if params.procs == 1 {
                set.spawn_thread(spec, body, ev_tx.clone())?;
            } else {
                set.spawn_child(spec, ev_tx.clone())?;
            }
        }
        Ok(set)
    }

    fn spawn_thread(
        &mut self,
        spec: WorkerSpec,
        body: WorkerFn,
        ev_tx: mpsc::Sender<(usize, FromWorker)>,
    ) -> anyhow::Result<()> {
        let index = spec.index as usize;
        let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAP);
        let (w_tx, mut w_rx) = mpsc::channel(CHANNEL_CAP);
        let fatal_tx = w_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                if let Err(e) = body(spec, cmd_rx, w_tx) {
                    let _ = fatal_tx.blocking_send(FromWorker::Fatal {
                        error: format!("{e:#}"),
                    });
                }
            })
            .context("spawning worker thread")?;
        tokio::spawn(async move {
            while let Some(ev) = w_rx.recv().await {
                if ev_tx.send((index, ev)).await.is_err() {
                    break;
                }
            }
        });
        self.commands.push(cmd_tx);
        self.threads.push(handle);
        Ok(())
    }

    fn spawn_child(
        &mut self,
        spec: WorkerSpec,
        ev_tx: mpsc::Sender<(usize, FromWorker)>,
    ) -> anyhow::Result<()> {
        let index = spec.index as usize;
        let exe = std::env::current_exe().context("locating own executable")?;
        let mut child = tokio::process::Command::new(exe)
            .arg(WORKER_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting worker process")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<ToWorker>(CHANNEL_CAP);
        let first = serde_json::to_string(&spec)? + "\n";
        tokio::spawn(async move {
            if stdin.write_all(first.as_bytes()).await.is_err() {
                return;
            }
            while let Some(cmd) = cmd_rx.recv().await {
                let Ok(line) = serde_json::to_string(&cmd) else {
                    continue;
                };
                if stdin.write_all((line + "\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            loop {
                let ev = match lines.next_line().await {
                    Ok(Some(line)) => match serde_json::from_str::<FromWorker>(&line) {
                        Ok(ev) => ev,
                        Err(e) => FromWorker::Fatal {
                            error: format!("bad line from worker: {e}"),
                        },
                    },
                    Ok(None) => FromWorker::Fatal {
                        error: "worker process exited".into(),
                    },
                    Err(e) => FromWorker::Fatal {
                        error: format!("reading worker output: {e}"),
                    },
                };
                let last = matches!(ev, FromWorker::Fatal { .. } | FromWorker::Result(_));
                if ev_tx.send((index, ev)).await.is_err() || last {
                    break;
                }
            }
        });
        self.commands.push(cmd_tx);
        self.children.push(child);
        Ok(())
    }

    /// Sends `cmd` to every worker (workers that are gone are skipped).
    pub async fn broadcast(&self, cmd: ToWorker) {
        for tx in &self.commands {
            let _ = tx.send(cmd.clone()).await;
        }
    }

    /// Waits for the workers to exit (children are killed after a grace period).
    pub async fn finish(mut self) {
        self.commands.clear();
        for child in &mut self.children {
            match tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill().await;
                }
            }
        }
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Entry point of a child worker process: spec and commands on stdin, events on stdout.
pub fn child_main(body: WorkerFn) -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut first = String::new();
    stdin.read_line(&mut first).context("reading worker spec")?;
    drop(stdin);
    let spec: WorkerSpec = serde_json::from_str(&first).context("parsing worker spec")?;

    let (cmd_tx, cmd_rx) = mpsc::channel(CHANNEL_CAP);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<ToWorker>(&line) {
                Ok(cmd) => {
                    if cmd_tx.blocking_send(cmd).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("worker: bad command: {e}"),
            }
        }
        // stdin closed: the coordinator is gone; dropping cmd_tx tells the worker.
    });

    let (ev_tx, mut ev_rx) = mpsc::channel::<FromWorker>(CHANNEL_CAP);
    let writer = std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        while let Some(ev) = ev_rx.blocking_recv() {
            let Ok(line) = serde_json::to_string(&ev) else {
                continue;
            };
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                break;
            }
        }
    });
    let fatal_tx = ev_tx.clone();
    let result = body(spec, cmd_rx, ev_tx);
    if let Err(e) = &result {
        let _ = fatal_tx.blocking_send(FromWorker::Fatal {
            error: format!("{e:#}"),
        });
    }
    drop(fatal_tx);
    let _ = writer.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_json_lines() {
        let ev = FromWorker::SendDone {
            group_sent: vec![(0, 5), (3, 7)],
        };
        let line = serde_json::to_string(&ev).unwrap();
        assert!(!line.contains('\n'));
        assert!(matches!(
            serde_json::from_str::<FromWorker>(&line).unwrap(),
            FromWorker::SendDone { group_sent } if group_sent == vec![(0, 5), (3, 7)]
        ));
        let cmd = serde_json::to_string(&ToWorker::Stop).unwrap();
        assert!(matches!(
            serde_json::from_str::<ToWorker>(&cmd).unwrap(),
            ToWorker::Stop
        ));
    }
}
