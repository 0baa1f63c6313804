//! `ping`: an application-level liveness check; answers `ok`.

use super::{CommandError, Reply, Session};

impl Session {
    pub(super) fn ping(&self) -> Result<Reply, CommandError> {
        Ok(None)
    }
}
