//! Turns the command line into validated [`RunParams`], refusing impossible runs with a
//! clear reason (non-loopback target, fd or port limits, inconsistent counts).

use anyhow::{bail, ensure, Context as _};

use crate::cli::{Cli, ScenarioCmd};
use crate::fdlimit;
use crate::plan::{RunParams, Scenario, Traffic};
use crate::target::Target;

/// Ephemeral ports usable per source address (from ip_local_port_range, default 28232).
pub fn ephemeral_ports() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            Some(it.next()??.abs_diff(it.next()??) + 1)
        })
        .unwrap_or(28_232)
}

/// Validated parameters for `cli` given this process's fd hard limit.
pub fn params_from_cli(cli: &Cli, fd_hard: u64, ports: u64) -> anyhow::Result<RunParams> {
    let c = &cli.common;
    let targets = c
        .url
        .split(',')
        .map(Target::parse)
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(!targets.is_empty(), "--url is empty");
    let jwt_secret = c
        .jwt_secret
        .clone()
        .context("--jwt-secret (or JWT_SECRET) is required")?;
    ensure!(c.connections > 0, "--connections must be at least 1");
    ensure!(c.threads > 0, "--threads must be at least 1");
    ensure!(c.procs > 0, "--procs must be at least 1");
    ensure!(
        (1..=254).contains(&c.source_ips),
        "--source-ips must be in 1..=254"
    );
    ensure!(
        c.duration >= 0.0 && c.warmup >= 0.0 && c.drain >= 0.0,
        "times must not be negative"
    );
    ensure!(
        c.connect_concurrency > 0,
        "--connect-concurrency must be at least 1"
    );
    if c.source_ips > 1 && !targets.iter().all(|t| t.addr.is_ipv4()) {
        bail!("--source-ips needs an IPv4 target (127.x.y.z)");
    }

    let traffic = |t: &crate::cli::TrafficArgs| -> anyhow::Result<Traffic> {
        ensure!(t.rate >= 0.0 && t.rate.is_finite(), "--rate must be >= 0");
        ensure!(t.inflight > 0, "--inflight must be at least 1");
        Ok(Traffic {
            rate: t.rate,
            inflight: t.inflight,
            payload: t.payload,
        })
    };
    let scenario = match &cli.scenario {
        ScenarioCmd::Room {
            rooms,
            senders,
            room_prefix,
            traffic: t,
            ..
        } => {
            ensure!(*rooms > 0, "--rooms must be at least 1");
            ensure!(
                *senders <= c.connections,
                "--senders ({senders}) cannot exceed --connections ({})",
                c.connections
            );
            ensure!(
                !room_prefix.is_empty()
                    && room_prefix
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
                "--room-prefix must be non-empty [A-Za-z0-9_-]"
            );
            Scenario::Room {
                rooms: *rooms,
                senders: *senders,
                room_prefix: room_prefix.clone(),
                traffic: traffic(t)?,
            }
        }
        ScenarioCmd::Dm {
            senders,
            traffic: t,
        } => {
            ensure!(
                c.connections.is_multiple_of(2),
                "dm pairs connections 2k and 2k+1: --connections must be even"
            );
            let senders = senders.unwrap_or(c.connections);
            ensure!(
                senders <= c.connections,
                "--senders ({senders}) cannot exceed --connections ({})",
                c.connections
            );
            Scenario::Dm {
                senders,
                traffic: traffic(t)?,
            }
        }
        ScenarioCmd::HotRoom {
            senders,
            rate,
            inflight,
            payload,
            room_prefix,
            ..
        } => {
            ensure!(
                *senders <= c.connections,
                "--senders ({senders}) cannot exceed --connections ({})",
                c.connections
            );
            ensure!(
                valid_prefix(room_prefix),
                "--room-prefix must be non-empty [A-Za-z0-9_-]"
            );
            Scenario::Room {
                rooms: 1,
                senders: *senders,
                room_prefix: room_prefix.clone(),
                traffic: traffic(&crate::cli::TrafficArgs {
                    rate: *rate,
                    inflight: *inflight,
                    payload: *payload,
                    sweep: None,
                    csv: None,
                    svg: None,
                })?,
            }
        }
        ScenarioCmd::Reconnect {
            room_size,
            room_prefix,
            ..
        } => {
            ensure!(*room_size > 0, "--room-size must be at least 1");
            ensure!(
                valid_prefix(room_prefix),
                "--room-prefix must be non-empty [A-Za-z0-9_-]"
            );
            Scenario::Reconnect {
                room_size: *room_size,
                rooms: c.connections.div_ceil(*room_size).max(1),
                room_prefix: room_prefix.clone(),
            }
        }
        ScenarioCmd::Connect { close } => Scenario::Connect { close: *close },
        ScenarioCmd::Idle { settle } => Scenario::Idle { settle: *settle },
    };

    let params = RunParams {
        scenario,
        url: c.url.clone(),
        jwt_secret,
        token_in_query: c.token_in_query,
        connections: c.connections,
        user_id_base: c.user_id_base,
        warmup: c.warmup,
        duration: c.duration,
        drain: c.drain,
        threads: c.threads,
        procs: c.procs,
        source_ips: c.source_ips,
        connect_concurrency: c.connect_concurrency,
        connect_timeout: c.connect_timeout,
    };
    check_limits(&params, fd_hard, ports)?;
    Ok(params)
}

/// A room prefix the server accepts in a room name.
fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

/// Refuses runs that the fd hard limit or the ephemeral port range cannot hold.
pub fn check_limits(p: &RunParams, fd_hard: u64, ports: u64) -> anyhow::Result<()> {
    let per_proc = (0..p.procs)
        .map(|w| p.worker_range(w).len() as u64)
        .max()
        .unwrap_or(0);
    let cap = fdlimit::max_connections(fd_hard);
    if per_proc > cap {
        let need = u64::from(p.connections).div_ceil(cap.max(1));
        bail!(
            "the file-descriptor hard limit is {fd_hard} (root cannot raise it here), so one \
             process can hold at most {cap} connections, but {per_proc} would land in one \
             process: use --procs {need} or more"
        );
    }
    let per_ip = u64::from(p.connections).div_ceil(u64::from(p.source_ips));
    if per_ip > ports {
        let need = u64::from(p.connections).div_ceil(ports);
        bail!(
            "{per_ip} connections per source address exceed the {ports} ephemeral ports of one \
             address: use --source-ips {need} or more"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &str) -> anyhow::Result<RunParams> {
        let mut argv = vec!["loadtest"];
        argv.extend(args.split_whitespace());
        let cli = Cli::try_parse_from(argv)?;
        params_from_cli(&cli, 20_000, 28_232)
    }

    #[test]
    fn room_defaults() {
        let p = parse("room --jwt-secret s --connections 1000 --rooms 10 --senders 1000 --rate 0")
            .unwrap();
        assert_eq!(p.senders(), 1000);
        assert_eq!(p.groups(), 10);
        assert_eq!(p.room_name(3).unwrap(), "lt-r10-3");
    }

    #[test]
    fn refusals() {
        assert!(parse("room --jwt-secret s --url ws://10.1.2.3:9001/")
            .unwrap_err()
            .to_string()
            .contains("loopback"));
        assert!(parse("room --connections 10").is_err(), "secret required");
        assert!(parse("dm --jwt-secret s --connections 11").is_err());
        assert!(parse("room --jwt-secret s --connections 10 --senders 11").is_err());
        let e = parse("idle --jwt-secret s --connections 30000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--procs 2"), "{e}");
        let e = parse("idle --jwt-secret s --connections 30000 --procs 2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--source-ips 2"), "{e}");
        parse("idle --jwt-secret s --connections 30000 --procs 2 --source-ips 2").unwrap();
    }
}
