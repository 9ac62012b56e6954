//! `loadtest`: load generator for chat_server. See README.md for flags and examples.

mod auth;
mod cli;
mod config;
mod conn;
mod coordinator;
mod fdlimit;
mod frame;
mod hist;
mod ipc;
mod net;
mod pacer;
mod payload;
mod plan;
mod provision;
mod report;
mod schedule;
mod seq;
mod stats;
mod sweep;
mod sysinfo;
mod target;
mod worker;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;

use crate::cli::{Cli, ScenarioCmd};
use crate::coordinator::Observe;

/// JSON form of a sweep: one report per rate.
#[derive(Serialize)]
struct SweepOut<'a> {
    scenario: &'a str,
    sweep: &'a [report::RunReport],
}

fn main() -> ExitCode {
    let result = if std::env::args().nth(1).as_deref() == Some(ipc::WORKER_FLAG) {
        ipc::child_main(worker::run)
    } else {
        coordinate(Cli::parse())
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn coordinate(cli: Cli) -> anyhow::Result<()> {
    let (soft, hard) = fdlimit::raise_to_hard().context("raising RLIMIT_NOFILE")?;
    let params = config::params_from_cli(&cli, hard, config::ephemeral_ports())?;
    if !cli.common.quiet {
        eprintln!(
            "fd limit {soft} (hard {hard}): at most {} connections per process",
            fdlimit::max_connections(hard)
        );
    }
    for &pid in &cli.common.server_pid {
        sysinfo::rss_kib(pid).with_context(|| format!("--server-pid {pid}: no such process"))?;
        if let Some(limit) = coordinator::server_fd_limit(pid) {
            if u64::from(params.connections) + 64 > limit {
                eprintln!(
                    "warning: the server's own fd limit is {limit}: it cannot hold {} connections",
                    params.connections
                );
            }
        }
    }
    let obs = Observe {
        server_pid: cli.common.server_pid.clone(),
        quiet: cli.common.quiet,
        fd_hard_limit: hard,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let no_provision = match &cli.scenario {
            ScenarioCmd::Room { no_provision, .. }
            | ScenarioCmd::HotRoom { no_provision, .. }
            | ScenarioCmd::Reconnect { no_provision, .. } => Some(*no_provision),
            _ => None,
        };
        if let Some(no_provision) = no_provision {
            if !no_provision {
                let url = cli.common.database_url.as_deref().context(
                    "the room scenario provisions its rooms: give --database-url (or DATABASE_URL), or --no-provision",
                )?;
                provision::ensure_rooms(url, &params.room_names()).await?;
            }
        }
        let sweep = match &cli.scenario {
            ScenarioCmd::Room { traffic, .. } | ScenarioCmd::Dm { traffic, .. } => {
                traffic.sweep.clone().map(|rates| (rates, traffic.clone()))
            }
            _ => None,
        };
        match sweep {
            None => {
                let report = coordinator::run_once(&params, &obs).await?;
                eprint!("{}", report.table());
                coordinator::emit_json(&report, cli.common.json.as_deref())
            }
            Some((rates, traffic)) => {
                let mut runs = Vec::new();
                for (i, rate) in rates.iter().enumerate() {
                    anyhow::ensure!(*rate >= 0.0, "--sweep rates must be >= 0");
                    let mut p = params.clone();
                    if let Some(t) = p.scenario.traffic_mut() {
                        t.rate = *rate;
                    }
                    eprintln!("== sweep point {}/{}: rate {rate}", i + 1, rates.len());
                    let report = coordinator::run_once(&p, &obs).await?;
                    eprint!("{}", report.table());
                    runs.push(report);
                }
                if let Some(path) = &traffic.csv {
                    sweep::write_csv(path, &runs)?;
                }
                if let Some(path) = &traffic.svg {
                    sweep::write_svg(path, &runs)?;
                }
                let all = SweepOut {
                    scenario: params.scenario.name(),
                    sweep: &runs,
                };
                coordinator::emit_json(&all, cli.common.json.as_deref())
            }
        }
    })
}
