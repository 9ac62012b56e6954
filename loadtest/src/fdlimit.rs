//! File-descriptor limit handling.

use rlimit::Resource;

/// Descriptors a process keeps for itself besides its client sockets.
pub const RESERVED_FDS: u64 = 64;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the (new soft, hard) pair.
pub fn raise_to_hard() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    if soft < hard {
        rlimit::setrlimit(Resource::NOFILE, hard, hard)?;
    }
    Ok((hard.max(soft), hard))
}

/// Most client connections one process can hold under the hard limit `hard`.
pub fn max_connections(hard: u64) -> u64 {
    hard.saturating_sub(RESERVED_FDS)
}
