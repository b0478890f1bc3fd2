//! Small state files of a cluster node (`<data-dir>/raft/vote`, `<data-dir>/raft/committed`),
//! replaced atomically: written to a temporary file, fsynced, renamed over the old one, and
//! the directory fsynced. Each holds `crc32:u32 LE | len:u32 LE | bytes`, so a damaged file is
//! reported rather than misread.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub(crate) const DIR: &str = "raft";
pub(crate) const VOTE: &str = "vote";
pub(crate) const COMMITTED: &str = "committed";

pub(crate) fn path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join(DIR).join(name)
}

/// Replaces the file with `bytes`, durably (whatever the store's durability setting: the vote
/// is what keeps a node from voting twice in one term).
pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("state files live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
    f.write_all(&out).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The file's bytes, `None` if it does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<Vec<u8>>> {
    let raw = match std::fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let damaged = |reason: &str| Error::Corruption {
        file: path.to_owned(),
        offset: 0,
        reason: format!("cluster state file is damaged: {reason}"),
    };
    if raw.len() < 8 {
        return Err(damaged("shorter than its header"));
    }
    let crc = u32::from_le_bytes(raw[0..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(raw[4..8].try_into().expect("4 bytes")) as usize;
    let bytes = &raw[8..];
    if bytes.len() != len {
        return Err(damaged("its length does not match its header"));
    }
    if crc32fast::hash(bytes) != crc {
        return Err(damaged("CRC mismatch"));
    }
    Ok(Some(bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), VOTE);
        assert_eq!(read(&p).unwrap(), None);
        write(&p, b"term 3, voted for 2").unwrap();
        write(&p, b"term 4, voted for 1").unwrap();
        assert_eq!(read(&p).unwrap().unwrap(), b"term 4, voted for 1");
        let mut raw = std::fs::read(&p).unwrap();
        raw[10] ^= 1;
        std::fs::write(&p, raw).unwrap();
        assert!(matches!(read(&p), Err(Error::Corruption { .. })));
    }
}
