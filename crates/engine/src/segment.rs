//! Segment files: naming, the header, the ordered set of segments, and a buffered cursor that
//! walks records forwards or backwards across segment boundaries.
//!
//! A log position is a logical byte offset: segment `base` + offset of the record after the
//! header. Segment headers are not counted, so positions continue unchanged across a rollover.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::io::{Fs, LogFile};
use crate::record::{check_frame, FrameError, FRAME_OVERHEAD};

pub const MAGIC: [u8; 8] = *b"STRATLOG";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 32;

/// File name of the segment whose first record is at `base`.
pub fn file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// The base position encoded in a segment file name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `magic[8] | version:u32 | header_len:u32 | base:u64 | reserved:u32 | crc:u32` (LE).
pub fn encode_header(base: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a header read from `path`; returns the base position it records.
pub fn check_header(h: &[u8], path: &Path) -> Result<u64> {
    let bad = |reason: String| Error::Corruption {
        file: path.to_owned(),
        offset: 0,
        reason,
    };
    if h.len() < HEADER_LEN as usize {
        return Err(bad(format!(
            "segment header is {} bytes, expected {HEADER_LEN}",
            h.len()
        )));
    }
    if h[0..8] != MAGIC {
        return Err(bad("not a Strata segment (bad magic number)".into()));
    }
    let crc = u32::from_le_bytes(h[28..32].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&h[0..28]) {
        return Err(bad("segment header CRC mismatch".into()));
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(bad(format!(
            "segment format version {version} is not supported (this build reads version {FORMAT_VERSION})"
        )));
    }
    Ok(u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")))
}

/// One segment file.
pub struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<dyn LogFile>,
}

impl Segment {
    /// File offset of a position inside this segment.
    pub fn offset_of(&self, position: u64) -> u64 {
        HEADER_LEN + (position - self.base)
    }

    fn read_exact(&self, position: u64, buf: &mut [u8]) -> Result<usize> {
        self.file
            .read_full_at(buf, self.offset_of(position))
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// The ordered segments of a log and its committed end.
pub struct Log {
    pub dir: PathBuf,
    pub fs: Arc<dyn Fs>,
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Everything before this position is durable (or written, in no-sync mode) and readable.
    committed_end: AtomicU64,
}

impl Log {
    pub fn new(
        dir: PathBuf,
        fs: Arc<dyn Fs>,
        segments: Vec<Arc<Segment>>,
        committed_end: u64,
    ) -> Self {
        Log {
            dir,
            fs,
            segments: RwLock::new(segments),
            committed_end: AtomicU64::new(committed_end),
        }
    }

    pub fn committed_end(&self) -> u64 {
        self.committed_end.load(Ordering::Acquire)
    }

    pub fn set_committed_end(&self, end: u64) {
        self.committed_end.store(end, Ordering::Release);
    }

    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().expect("segments lock").clone()
    }

    /// Creates, fsyncs and registers a new segment starting at `base`.
    pub fn create_segment(&self, base: u64, durable: bool) -> Result<Arc<Segment>> {
        let path = self.dir.join(file_name(base));
        let file = self.fs.open(&path, true).map_err(|e| Error::io(&path, e))?;
        file.set_len(0).map_err(|e| Error::io(&path, e))?;
        file.write_all_at(&encode_header(base), 0)
            .map_err(|e| Error::io(&path, e))?;
        if durable {
            file.sync_data().map_err(|e| Error::io(&path, e))?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        let seg = Arc::new(Segment { base, path, file });
        self.segments
            .write()
            .expect("segments lock")
            .push(seg.clone());
        Ok(seg)
    }

    /// Unregisters the segments that start after `position` and returns the one holding it
    /// (the last one kept) with the removed ones. Only the log's appender calls this, for
    /// positions past the committed end, so no reader is using what is removed.
    pub fn cut_segments(&self, position: u64) -> (Arc<Segment>, Vec<Arc<Segment>>) {
        let mut segs = self.segments.write().expect("segments lock");
        let keep = segs.partition_point(|s| s.base <= position).max(1);
        let removed = segs.split_off(keep);
        (segs[keep - 1].clone(), removed)
    }

    /// The `len` bytes at `position`, which lie within one segment.
    pub fn read_bytes(&self, position: u64, len: usize) -> Result<Bytes> {
        let Some((seg, end)) = self.segment_at(position, u64::MAX) else {
            return Err(Error::Corruption {
                file: self.dir.clone(),
                offset: position,
                reason: format!("log position {position} is in no segment"),
            });
        };
        let mut buf = vec![0u8; len];
        let n = seg.read_exact(position, &mut buf)?;
        if n < len || position + len as u64 > end {
            return Err(Error::Corruption {
                file: seg.path.clone(),
                offset: seg.offset_of(position),
                reason: format!(
                    "{len} bytes at log position {position} run past the segment's end"
                ),
            });
        }
        Ok(Bytes::from(buf))
    }

    /// The segment holding `position` and the end of that segment's readable data.
    fn segment_at(&self, position: u64, limit: u64) -> Option<(Arc<Segment>, u64)> {
        let segs = self.segments.read().expect("segments lock");
        let i = segs
            .partition_point(|s| s.base <= position)
            .checked_sub(1)?;
        let end = segs.get(i + 1).map_or(limit, |next| next.base.min(limit));
        (position < end).then(|| (segs[i].clone(), end))
    }

    /// The segment whose data ends exactly at `position` (walking backwards) and its base.
    fn segment_before(&self, position: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read().expect("segments lock");
        let i = segs.partition_point(|s| s.base < position).checked_sub(1)?;
        Some(segs[i].clone())
    }
}

/// A frame problem found by a cursor, with where it was found.
#[derive(Debug)]
pub struct ScanError {
    pub file: PathBuf,
    pub offset: u64,
    pub position: u64,
    pub error: FrameError,
}

impl ScanError {
    pub fn reason(&self) -> String {
        match &self.error {
            FrameError::Truncated => "record is cut short".to_owned(),
            FrameError::Invalid(r) => r.clone(),
        }
    }

    pub fn into_error(self) -> Error {
        Error::Corruption {
            reason: self.reason(),
            file: self.file,
            offset: self.offset,
        }
    }
}

/// A framed record found by a cursor.
pub struct Item {
    pub position: u64,
    pub block: Bytes,
    pub payload: std::ops::Range<usize>,
}

/// Reads records through a buffer of whole blocks, so that sequential reads cost one system
/// call per block rather than per record.
pub struct Cursor<'a> {
    log: &'a Log,
    /// Positions at or past `limit` are never read.
    limit: u64,
    chunk: usize,
    block: Bytes,
    block_pos: u64,
}

pub enum Step {
    Record(Item),
    End,
    Bad(ScanError),
}

impl<'a> Cursor<'a> {
    pub fn new(log: &'a Log, limit: u64, chunk: usize) -> Self {
        Cursor {
            log,
            limit,
            chunk,
            block: Bytes::new(),
            block_pos: 0,
        }
    }

    /// Makes `[from, to)` available in the buffer, reading `[start, end)` of `seg` if it is not.
    fn fill(&mut self, seg: &Segment, from: u64, to: u64, start: u64, end: u64) -> Result<bool> {
        if from >= self.block_pos && to <= self.block_pos + self.block.len() as u64 {
            return Ok(true);
        }
        let mut buf = vec![0u8; (end - start) as usize];
        let n = seg.read_exact(start, &mut buf)?;
        buf.truncate(n);
        self.block = Bytes::from(buf);
        self.block_pos = start;
        Ok(to <= start + n as u64)
    }

    fn slice(&self, from: u64, to: u64) -> &[u8] {
        &self.block[(from - self.block_pos) as usize..(to - self.block_pos) as usize]
    }

    fn bad(seg: &Segment, position: u64, error: FrameError) -> Step {
        Step::Bad(ScanError {
            file: seg.path.clone(),
            offset: seg.offset_of(position),
            position,
            error,
        })
    }

    /// The record starting at `position`.
    pub fn at(&mut self, position: u64) -> Result<Step> {
        let Some((seg, seg_end)) = self.log.segment_at(position, self.limit) else {
            return Ok(Step::End);
        };
        let chunk = self.chunk as u64;
        let read_end = |want: u64| seg_end.min(position + want.max(chunk));
        if !self.fill(
            &seg,
            position,
            (position + 8).min(seg_end),
            position,
            read_end(8),
        )? {
            return Ok(Self::bad(&seg, position, FrameError::Truncated));
        }
        if seg_end - position < 8 {
            return Ok(Self::bad(&seg, position, FrameError::Truncated));
        }
        let len = u32::from_le_bytes(
            self.slice(position, position + 4)
                .try_into()
                .expect("4 bytes"),
        ) as u64;
        let total = len.saturating_add(FRAME_OVERHEAD as u64);
        if total > seg_end - position {
            // Let the frame check say whether the length itself is implausible.
            let partial = self.slice(position, (position + 8).min(seg_end)).to_vec();
            let err = match check_frame(&partial) {
                Err(FrameError::Invalid(r)) => FrameError::Invalid(r),
                _ => FrameError::Truncated,
            };
            return Ok(Self::bad(&seg, position, err));
        }
        self.fill(&seg, position, position + total, position, read_end(total))?;
        match check_frame(self.slice(position, position + total)) {
            Ok((payload, _)) => {
                let off = (position - self.block_pos) as usize;
                Ok(Step::Record(Item {
                    position,
                    block: self.block.clone(),
                    payload: payload.start + off..payload.end + off,
                }))
            }
            Err(e) => Ok(Self::bad(&seg, position, e)),
        }
    }

    /// The record that ends at `position` (the one before it), if any.
    pub fn before(&mut self, position: u64) -> Result<Step> {
        let Some(seg) = self.log.segment_before(position.min(self.limit)) else {
            return Ok(Step::End);
        };
        let position = position.min(self.limit);
        if position - seg.base < FRAME_OVERHEAD as u64 {
            return Ok(Self::bad(&seg, seg.base, FrameError::Truncated));
        }
        let start = seg.base.max(position.saturating_sub(self.chunk as u64));
        self.fill(&seg, position - 4, position, start, position)?;
        let len = u32::from_le_bytes(
            self.slice(position - 4, position)
                .try_into()
                .expect("4 bytes"),
        ) as u64;
        let total = len + FRAME_OVERHEAD as u64;
        if total > position - seg.base {
            return Ok(Self::bad(
                &seg,
                position - 4,
                FrameError::Invalid(format!(
                    "trailing record length {len} reaches before the segment start"
                )),
            ));
        }
        let rec = position - total;
        self.fill(
            &seg,
            rec,
            position,
            seg.base
                .max(position.saturating_sub(self.chunk.max(total as usize) as u64)),
            position,
        )?;
        match check_frame(self.slice(rec, position)) {
            Ok((payload, _)) => {
                let off = (rec - self.block_pos) as usize;
                Ok(Step::Record(Item {
                    position: rec,
                    block: self.block.clone(),
                    payload: payload.start + off..payload.end + off,
                }))
            }
            Err(e) => Ok(Self::bad(&seg, rec, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_file_name(&file_name(12345)), Some(12345));
        assert_eq!(parse_file_name("00000000000000012345.tmp"), None);
        assert_eq!(parse_file_name("12345.seg"), None);
    }

    #[test]
    fn header_checks() {
        let p = Path::new("x.seg");
        let h = encode_header(777);
        assert_eq!(check_header(&h, p).unwrap(), 777);
        let mut bad = h;
        bad[17] ^= 1;
        assert!(matches!(
            check_header(&bad, p),
            Err(Error::Corruption { .. })
        ));
        let mut other = h;
        other[0] = b'X';
        let err = check_header(&other, p).unwrap_err().to_string();
        assert!(err.contains("magic"), "{err}");
        assert!(check_header(&h[..10], p).is_err());
    }
}
