//! The one seam through which the log touches the file system.
//!
//! Production uses [`OsFs`]. Tests wrap it in [`FaultyFs`] to make a write or an fsync fail, or
//! to leave a torn write behind, exactly as a crash or a failing disk would. The index (sled)
//! does not go through this seam: it is derived data and is rebuilt from the log.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// File-system operations used by the log.
pub trait Fs: Send + Sync + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens a file for reading and writing, creating it if `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes directory entries (created or removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open file. Positioned reads and writes, so readers and the single writer share it.
#[allow(clippy::len_without_is_empty)]
pub trait LogFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns the number read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&self) -> io::Result<()>;

    /// Writes `buf` at `offset` and makes it durable, as `write_all_at` then `sync_data` would.
    fn write_all_at_durable(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)?;
        self.sync_data()
    }
    fn len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// True when no directory entry names the file any more (it was deleted while open):
    /// what is written to it then is lost when it is closed.
    fn is_unlinked(&self) -> io::Result<bool> {
        Ok(false)
    }

    /// Fills `buf` from `offset`, stopping early only at end of file.
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

struct OsFile(File);

impl Fs for OsFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl LogFile for OsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    /// One `pwritev2(RWF_DSYNC)` call instead of a write and an fdatasync: the same guarantee
    /// (per-write O_DSYNC), one system call fewer on the append path. Falls back to write +
    /// fdatasync where the kernel or file system does not support the flag.
    fn write_all_at_durable(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut done = 0usize;
        while done < buf.len() {
            let rest = &buf[done..];
            let iov = libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            };
            // SAFETY: `iov` points into `buf`, which outlives the call; the fd is open.
            let n = unsafe {
                libc::pwritev2(
                    self.0.as_raw_fd(),
                    &iov,
                    1,
                    (offset + done as u64) as libc::off_t,
                    libc::RWF_DSYNC,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) if done == 0 => {
                        self.0.write_all_at(buf, offset)?;
                        return self.0.sync_data();
                    }
                    _ => return Err(err),
                }
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev2 wrote nothing",
                ));
            }
            done += n as usize;
        }
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn is_unlinked(&self) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.0.metadata()?.nlink() == 0)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

/// A wrapper that injects failures into the file system below it.
///
/// Counters count down on each call; when one reaches zero that call fails (and every later
/// one does too, like a disk that went away). A negative counter never fires.
#[derive(Clone)]
pub struct FaultyFs {
    inner: Arc<dyn Fs>,
    faults: Arc<Faults>,
}

#[derive(Default)]
struct Faults {
    writes_left: AtomicI64,
    syncs_left: AtomicI64,
    /// When non-zero, the failing write first writes this many bytes of its buffer (a torn write).
    torn_bytes: AtomicU64,
}

impl FaultyFs {
    pub fn new(inner: Arc<dyn Fs>) -> Self {
        let faults = Faults::default();
        faults.writes_left.store(-1, Ordering::SeqCst);
        faults.syncs_left.store(-1, Ordering::SeqCst);
        FaultyFs {
            inner,
            faults: Arc::new(faults),
        }
    }

    /// The `n`-th write from now (1 = the next one) fails after writing `torn_bytes` bytes.
    pub fn fail_write_after(&self, n: i64, torn_bytes: u64) {
        self.faults.torn_bytes.store(torn_bytes, Ordering::SeqCst);
        self.faults.writes_left.store(n, Ordering::SeqCst);
    }

    /// The `n`-th fsync from now fails.
    pub fn fail_sync_after(&self, n: i64) {
        self.faults.syncs_left.store(n, Ordering::SeqCst);
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

/// Decrements a countdown; true when this call must fail.
fn fires(counter: &AtomicI64) -> bool {
    let prev = counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
            if v > 0 {
                Some(v - 1)
            } else {
                None
            }
        })
        .unwrap_or_else(|v| v);
    prev == 1 || prev == 0
}

impl Fs for FaultyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        let inner = self.inner.open(path, create)?;
        Ok(Arc::new(FaultyFile {
            inner,
            faults: self.faults.clone(),
            path: path.to_owned(),
        }))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if fires(&self.faults.syncs_left) {
            return Err(injected("directory fsync"));
        }
        self.inner.sync_dir(dir)
    }
}

struct FaultyFile {
    inner: Arc<dyn LogFile>,
    faults: Arc<Faults>,
    #[allow(dead_code)]
    path: PathBuf,
}

impl FaultyFile {
    /// When the write fault fires: leaves the configured torn prefix and returns the failure.
    fn failing_write(&self, buf: &[u8], offset: u64) -> Option<io::Result<()>> {
        if !fires(&self.faults.writes_left) {
            return None;
        }
        let torn = (self.faults.torn_bytes.load(Ordering::SeqCst) as usize).min(buf.len());
        if torn > 0 {
            if let Err(e) = self.inner.write_all_at(&buf[..torn], offset) {
                return Some(Err(e));
            }
        }
        Some(Err(injected("write")))
    }
}

impl LogFile for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Some(failed) = self.failing_write(buf, offset) {
            return failed;
        }
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        if fires(&self.faults.syncs_left) {
            return Err(injected("fsync"));
        }
        self.inner.sync_data()
    }
    /// The durable write production uses (one `pwritev2(RWF_DSYNC)` on Linux), with the same
    /// faults: a failing write may leave a torn prefix; a failing sync leaves the bytes
    /// written but not durable.
    fn write_all_at_durable(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Some(failed) = self.failing_write(buf, offset) {
            return failed;
        }
        if fires(&self.faults.syncs_left) {
            self.inner.write_all_at(buf, offset)?;
            return Err(injected("fsync"));
        }
        self.inner.write_all_at_durable(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn is_unlinked(&self) -> io::Result<bool> {
        self.inner.is_unlinked()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_fire_on_the_nth_call_and_stay() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new(Arc::new(OsFs));
        let f = fs.open(&dir.path().join("f"), true).unwrap();
        f.write_all_at(b"abcd", 0).unwrap();
        f.sync_data().unwrap();
        fs.fail_write_after(2, 2);
        f.write_all_at(b"efgh", 4).unwrap();
        let err = f.write_all_at(b"ijkl", 8).unwrap_err();
        assert!(err.to_string().contains("injected write"), "{err}");
        assert_eq!(f.len().unwrap(), 10, "the failing write left 2 torn bytes");
        assert!(
            f.write_all_at(b"mnop", 10).is_err(),
            "a dead disk stays dead"
        );
        fs.fail_sync_after(1);
        assert!(f.sync_data().is_err());
        let mut buf = [0u8; 10];
        assert_eq!(f.read_full_at(&mut buf, 0).unwrap(), 10);
        assert_eq!(&buf, b"abcdefghij");
    }

    #[test]
    fn durable_writes_see_the_same_faults() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new(Arc::new(OsFs));
        let f = fs.open(&dir.path().join("f"), true).unwrap();
        f.write_all_at_durable(b"abcd", 0).unwrap();
        fs.fail_sync_after(1);
        let err = f.write_all_at_durable(b"efgh", 4).unwrap_err();
        assert!(err.to_string().contains("injected fsync"), "{err}");
        assert_eq!(f.len().unwrap(), 8, "written, but not made durable");
        let dir2 = tempfile::tempdir().unwrap();
        let fs = FaultyFs::new(Arc::new(OsFs));
        let f = fs.open(&dir2.path().join("f"), true).unwrap();
        fs.fail_write_after(1, 3);
        assert!(f.write_all_at_durable(b"abcdef", 0).is_err());
        assert_eq!(f.len().unwrap(), 3, "a torn prefix");
    }
}
