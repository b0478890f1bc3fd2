//! The exclusive lock that keeps a second process off a store.
//!
//! The lock is an `flock` on the data directory itself and on its `log/` directory, not on a
//! file inside them: an operator may delete `index/` (and once deleted a `LOCK` file) of a
//! running store by mistake, but that must never let a second server open the same log. The
//! operating system drops the lock when the process exits, however it exits.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Held while the store is open.
pub(crate) struct DirLock {
    _held: Vec<File>,
}

/// Locks `data_dir` and `log_dir` (both must exist), or fails with [`Error::Locked`].
pub(crate) fn lock_dirs(data_dir: &Path, log_dir: &Path) -> Result<DirLock> {
    let mut held = Vec::with_capacity(2);
    for dir in [data_dir, log_dir] {
        let f = File::open(dir).map_err(|e| Error::io(dir, e))?;
        match f.try_lock() {
            Ok(()) => held.push(f),
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: data_dir.to_owned(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(dir, e)),
        }
    }
    Ok(DirLock { _held: held })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_deleting_files_does_not_release_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::create_dir_all(&log).unwrap();
        std::fs::write(dir.path().join("LOCK"), b"").unwrap();
        let held = lock_dirs(dir.path(), &log).unwrap();
        std::fs::remove_file(dir.path().join("LOCK")).unwrap();
        assert!(matches!(
            lock_dirs(dir.path(), &log),
            Err(Error::Locked { .. })
        ));
        drop(held);
        lock_dirs(dir.path(), &log).unwrap();
    }
}
