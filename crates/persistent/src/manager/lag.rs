//! A group's lag: how many events of its source lie past what it has settled.

use strata_engine::{AllFrom, Direction, Error as EngineError};

use super::Groups;
use crate::error::{Error, Result};
use crate::group::GroupInfo;
use crate::settings::Target;

/// Records examined, at most, when counting a `$all` group's lag.
const LAG_SCAN_LIMIT: usize = 10_000;

impl Groups {
    /// `info` with its lag counted (a `$all` group's is a lower bound past
    /// [`LAG_SCAN_LIMIT`] records).
    pub(super) async fn with_lag(&self, mut info: GroupInfo) -> Result<GroupInfo> {
        let engine = self.engine.clone();
        let from = info.settled_up_to;
        let target = info.target.clone();
        let filter = info
            .settings
            .filter
            .as_ref()
            .map(|f| f.build())
            .transpose()?;
        let (lag, capped) = tokio::task::spawn_blocking(move || -> Result<(u64, bool)> {
            match &target {
                Target::Stream(s) => match engine.last_revision(s) {
                    Ok(last) => Ok(((last + 1).saturating_sub(from), false)),
                    Err(EngineError::StreamNotFound { .. })
                    | Err(EngineError::StreamDeleted { .. }) => Ok((0, false)),
                    Err(e) => Err(e.into()),
                },
                Target::All => {
                    let mut pos = from;
                    let mut count = 0u64;
                    let mut scanned = 0usize;
                    loop {
                        let slice = engine.read_all_scan(
                            AllFrom::Position(pos),
                            Direction::Forwards,
                            10_000,
                            filter.as_ref(),
                            10_000,
                        )?;
                        count += slice
                            .events
                            .iter()
                            .filter(|e| !e.stream.starts_with('$'))
                            .count() as u64;
                        scanned += slice.records_scanned;
                        pos = slice.next_position;
                        if slice.is_end {
                            return Ok((count, false));
                        }
                        if scanned >= LAG_SCAN_LIMIT {
                            return Ok((count, true));
                        }
                    }
                }
            }
        })
        .await
        .map_err(|e| Error::BadState {
            stream: info.target.to_string(),
            reason: format!("lag count failed: {e}"),
        })??;
        info.lag = lag;
        info.lag_is_lower_bound = capped;
        Ok(info)
    }
}
