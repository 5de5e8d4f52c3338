//! Disk errors of the outbox and the outage buffer, logged at most once per
//! [`ERROR_LOG_EVERY`]: a full or failing disk fails every write, and one line per
//! write would fill the journal of the device it is already short of space on. Each line
//! says how many errors came since the last one, and the total stays in `stats`.

use std::time::{Duration, Instant};

use crate::Error;

pub const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct ErrorLog {
    logged: Option<Instant>,
    unlogged: u64,
}

impl ErrorLog {
    /// Records one error; logs it when the last line is `ERROR_LOG_EVERY` old. `total` is
    /// the caller's count of write errors so far, this one included.
    pub fn record(&mut self, e: &Error, what: &'static str, total: u64) {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_EVERY)
        {
            tracing::error!(
                error = %e,
                errors = self.unlogged,
                write_errors = total,
                "{what}; logged at most once a minute"
            );
            self.logged = Some(now);
            self.unlogged = 0;
        }
    }
}
