//! Shutdown, as a sequence with deadlines: not ready, close clients with 1001 spread over
//! the drain window, wait for them at most the grace period, then stop the bus last.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Node;
use crate::conn::Conn;
use crate::protocol::CloseCode;

impl Node {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// First step of shutdown: not ready, no new client connections.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Closes every connection with 1001, spread evenly over the drain window so that
    /// clients do not all reconnect elsewhere at the same instant.
    pub async fn close_clients(&self) {
        let conns: Vec<Arc<Conn>> = self.conns.lock().values().cloned().collect();
        let window = Duration::from_millis(self.settings.shutdown.drain_window_ms);
        tracing::info!(connections = conns.len(), ?window, "draining");
        let step = window.checked_div(conns.len() as u32).unwrap_or_default();
        let start = tokio::time::Instant::now();
        for (i, conn) in conns.iter().enumerate() {
            tokio::time::sleep_until(start + step * i as u32).await;
            conn.close(CloseCode::GoingAway);
        }
        tokio::time::sleep_until(start + window).await;
    }

    /// Waits for every connection task to end, at most `shutdown.grace_ms`, then drops
    /// whatever is left.
    pub async fn finish(&self) {
        let grace = Duration::from_millis(self.settings.shutdown.grace_ms);
        self.tasks.close();
        let clients_gone = async {
            while self.connection_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(grace, clients_gone).await.is_err() {
            let left: Vec<Arc<Conn>> = self.conns.lock().values().cloned().collect();
            tracing::warn!(
                connections = left.len(),
                "grace period over, dropping the rest"
            );
            for conn in left {
                conn.abort(CloseCode::GoingAway);
            }
        }
        // The bus goes last: clients being drained still receive until they are closed.
        self.bus_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(2), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not finish in time");
        }
    }
}
