//! Re-reading files a node serves from (JWKS, TLS certificate and key) when they change
//! or on SIGHUP, without a restart. Polls modification times: works the same on every
//! filesystem, including mounted secrets in containers where change events do not arrive.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the files' modification times are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Calls `reload` whenever one of `files` changes (modification time or size) or a
/// SIGHUP is signalled through `hup`, until `stop`. `what` names it in logs.
pub async fn watch_files(
    what: &'static str,
    files: Vec<PathBuf>,
    mut hup: watch::Receiver<u64>,
    stop: CancellationToken,
    reload: impl Fn() -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
) {
    let stamp = |files: &[PathBuf]| -> Vec<Option<(SystemTime, u64)>> {
        files
            .iter()
            .map(|f| {
                let meta = std::fs::metadata(f).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    };
    let mut seen = stamp(&files);
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let signalled = tokio::select! {
            () = stop.cancelled() => return,
            changed = hup.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
            _ = poll.tick() => false,
        };
        let now = stamp(&files);
        if !signalled && now == seen {
            continue;
        }
        seen = now;
        match reload() {
            Ok(()) => tracing::info!(what, signalled, "reloaded"),
            Err(error) => {
                let error = &*error as &dyn std::error::Error;
                tracing::error!(what, error, "reload failed; keeping what was loaded before");
            }
        }
    }
}
