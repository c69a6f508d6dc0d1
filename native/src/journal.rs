//! The hot loop of journal replay: verify and decode consecutive frames of a segment
//! (layout: `clearing/journal/_format.py`, which stays normative and the reference).
//!
//! This module only says "good" or "not good": for each frame it makes exactly the checks
//! `iter_frames` makes on its happy path, and stops at the first frame that fails any of
//! them. Python then re-reads that frame with its own code, which decides what kind of
//! failure it is (torn tail or corruption) and with which reason, so the classification
//! lives in one place. A frame this scanner refuses but Python accepts (an encoding it does
//! not take, e.g. extra array elements msgspec ignores) only costs that one frame the slow
//! path; a frame it accepts must be one Python accepts with the same fields.

use std::ops::Range;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use sha2::{Digest, Sha256};

pub const FRAME_HEADER_BYTES: usize = 14;
/// Frame magic 0xC1 and frame version 1, as the first two bytes read big-endian.
const FRAME_MAGIC_VERSION: u16 = 0xC101;
const HASH_BYTES: usize = 32;

/// A frame that passed every check; its fields as ranges of the scanned buffer, so the
/// scan itself needs no Python objects (and is testable without Python).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Good {
    pub seq: u64,
    pub source: Range<usize>,
    pub payload: Range<usize>,
    pub outputs: Range<usize>,
    pub chain_hash: Range<usize>,
    /// Offset just past the frame.
    pub end: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<Good>,
    pub next_offset: usize,
    /// One past the last good seq: a u128 because a record may carry seq `u64::MAX`.
    pub next_seq: u128,
    /// Chain hash of the last good record, or the `prev_hash` passed in.
    pub last_hash: Vec<u8>,
    /// The scan stopped because the frame at `next_offset` failed a check.
    pub problem: bool,
}

/// Verify up to `max_records` frames of `buf[..end]` from `offset`, the first expected to
/// carry `seq` and chain from `prev_hash`; stop at `end`, after `stop_seq`, once the frames
/// read reach `max_bytes`, or before the first frame that fails a check (`problem`).
/// Never panics, whatever the bytes.
#[allow(clippy::too_many_arguments)]
pub fn scan(
    buf: &[u8],
    offset: usize,
    end: usize,
    seq: u64,
    prev_hash: &[u8],
    stop_seq: u64,
    max_records: usize,
    max_bytes: usize,
) -> Scan {
    let mut records = Vec::new();
    let (next_offset, next_seq, last_hash, problem) =
        scan_each(buf, offset, end, seq, prev_hash, stop_seq, max_records, max_bytes, |_, good| {
            records.push(good);
            true
        });
    Scan { records, next_offset, next_seq, last_hash, problem }
}

/// `scan`, handing each good frame to `visit` (with the scanned bytes) as it is verified
/// instead of collecting them; `visit` returns false to end the batch after that frame.
/// Returns `(next_offset, next_seq, last_hash, problem)` as `Scan` holds them.
#[allow(clippy::too_many_arguments)]
pub fn scan_each(
    buf: &[u8],
    offset: usize,
    end: usize,
    seq: u64,
    prev_hash: &[u8],
    stop_seq: u64,
    max_records: usize,
    max_bytes: usize,
    mut visit: impl FnMut(&[u8], Good) -> bool,
) -> (usize, u128, Vec<u8>, bool) {
    let data = &buf[..end.min(buf.len())];
    let mut count = 0usize;
    let mut off = offset;
    let mut seq = seq;
    let mut next_seq = u128::from(seq);
    let mut prev = prev_hash;
    let mut problem = false;
    while count < max_records && off - offset < max_bytes && off < data.len() && seq <= stop_seq {
        let Some(good) = check_frame(data, off, seq, prev) else {
            problem = true;
            break;
        };
        prev = &data[good.chain_hash.clone()];
        off = good.end;
        count += 1;
        next_seq += 1;
        let go_on = visit(data, good);
        if seq == u64::MAX || !go_on {
            break; // no seq can follow; Python reports whatever frame comes next
        }
        seq += 1;
    }
    (off, next_seq, prev.to_vec(), problem)
}

/// `scan_each` with the checks (CRC32C, MessagePack, SHA-256 chain) on a second thread,
/// running ahead of `visit` by up to a few chunks of frames: the replay loop applies
/// records on one core while the next ones are verified on the other. Same arguments,
/// same frames visited in the same order, same result: when `visit` ends the batch, the
/// position after its frame; otherwise the checking thread's.
#[allow(clippy::too_many_arguments)]
pub fn scan_each_ahead(
    buf: &[u8],
    offset: usize,
    end: usize,
    seq: u64,
    prev_hash: &[u8],
    stop_seq: u64,
    max_records: usize,
    max_bytes: usize,
    mut visit: impl FnMut(&[u8], Good) -> bool,
) -> (usize, u128, Vec<u8>, bool) {
    // Frames travel in chunks so the threads meet once per chunk, not per frame.
    const CHUNK: usize = 64;
    const CHUNKS_AHEAD: usize = 4;
    let data = &buf[..end.min(buf.len())];
    std::thread::scope(|scope| {
        let (send, receive) = std::sync::mpsc::sync_channel::<Vec<Good>>(CHUNKS_AHEAD);
        let checker = scope.spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            let result = scan_each(data, offset, end, seq, prev_hash, stop_seq, max_records, max_bytes, |_, good| {
                chunk.push(good);
                if chunk.len() < CHUNK {
                    return true;
                }
                // A failed send: the visitor ended the batch; stop checking.
                send.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).is_ok()
            });
            if !chunk.is_empty() {
                let _ = send.send(chunk);
            }
            result
        });
        let mut ended_after: Option<(usize, u64, Range<usize>)> = None;
        'chunks: for chunk in receive.iter() {
            for good in chunk {
                let (frame_end, frame_seq, hash) = (good.end, good.seq, good.chain_hash.clone());
                if !visit(data, good) {
                    ended_after = Some((frame_end, frame_seq, hash));
                    break 'chunks;
                }
            }
        }
        drop(receive); // lets a checker blocked on a full channel see the end and stop
        let checked = checker.join().expect("the journal checks never panic");
        match ended_after {
            Some((frame_end, frame_seq, hash)) => (frame_end, u128::from(frame_seq) + 1, data[hash].to_vec(), false),
            None => checked,
        }
    })
}

/// The frame at `off` if it passes every check `iter_frames` makes, else None.
fn check_frame(data: &[u8], off: usize, seq: u64, prev: &[u8]) -> Option<Good> {
    let header: &[u8; FRAME_HEADER_BYTES] = data.get(off..off.checked_add(FRAME_HEADER_BYTES)?)?.try_into().ok()?;
    let magic_version = u16::from_be_bytes([header[0], header[1]]);
    let body_len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
    let body_len_check = u32::from_be_bytes([header[6], header[7], header[8], header[9]]);
    let body_crc = u32::from_be_bytes([header[10], header[11], header[12], header[13]]);
    if magic_version != FRAME_MAGIC_VERSION || body_len ^ body_len_check != u32::MAX {
        return None;
    }
    let body_start = off + FRAME_HEADER_BYTES;
    let body_end = body_start.checked_add(usize::try_from(body_len).ok()?)?;
    let body = data.get(body_start..body_end)?;
    if crc32c::crc32c(body) != body_crc {
        return None;
    }
    let mut reader = Reader { data: &data[..body_end], pos: body_start };
    if reader.array_len()? != 5 {
        return None;
    }
    let record_seq = reader.uint()?;
    let source = reader.str()?;
    let payload = reader.bin()?;
    let outputs = reader.bin()?;
    let chain_hash = reader.bin()?;
    if reader.pos != body_end || record_seq != seq || chain_hash.len() != HASH_BYTES {
        return None;
    }
    let digest = compute_chain_hash(prev, seq, &data[source.clone()], &data[payload.clone()], &data[outputs.clone()]);
    if digest[..] != data[chain_hash.clone()] {
        return None;
    }
    Some(Good { seq, source, payload, outputs, chain_hash, end: body_end })
}

/// `chain_hash` of `_format.py`: SHA-256 over prev_hash, u64 seq, the three u32 lengths,
/// then the three fields.
pub fn compute_chain_hash(prev: &[u8], seq: u64, source: &[u8], payload: &[u8], outputs: &[u8]) -> [u8; 32] {
    // The fields come from one body whose length is a u32, so each length fits a u32.
    let len = |b: &[u8]| (b.len() as u32).to_be_bytes();
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(seq.to_be_bytes());
    hasher.update(len(source));
    hasher.update(len(payload));
    hasher.update(len(outputs));
    hasher.update(source);
    hasher.update(payload);
    hasher.update(outputs);
    hasher.finalize().into()
}

/// MessagePack reader for the few types a body holds, accepting every width encoding of
/// them (as msgspec does). Every method returns None on anything else or on short data.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// A big-endian unsigned integer of `n` <= 8 bytes.
    fn be(&mut self, n: usize) -> Option<u64> {
        let bytes = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// The next `len` bytes, as a range of the buffer.
    fn span(&mut self, len: u64) -> Option<Range<usize>> {
        let end = self.pos.checked_add(usize::try_from(len).ok()?)?;
        if end > self.data.len() {
            return None;
        }
        let range = self.pos..end;
        self.pos = end;
        Some(range)
    }

    fn array_len(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x90..=0x9f => Some(u64::from(b & 0x0f)),
            0xdc => self.be(2),
            0xdd => self.be(4),
            _ => None,
        }
    }

    /// A non-negative integer in any encoding; a negative one can never be the expected
    /// seq, so it is refused here and reported by Python.
    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            b @ 0x00..=0x7f => Some(u64::from(b)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => self.non_negative(1),
            0xd1 => self.non_negative(2),
            0xd2 => self.non_negative(4),
            0xd3 => self.non_negative(8),
            _ => None,
        }
    }

    fn non_negative(&mut self, n: usize) -> Option<u64> {
        let v = self.be(n)?;
        (v >> (8 * n - 1) == 0).then_some(v)
    }

    /// A str, which must be valid UTF-8 (msgspec refuses it otherwise).
    fn str(&mut self) -> Option<Range<usize>> {
        let len = match self.byte()? {
            b @ 0xa0..=0xbf => u64::from(b & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        let range = self.span(len)?;
        std::str::from_utf8(&self.data[range.clone()]).ok()?;
        Some(range)
    }

    fn bin(&mut self) -> Option<Range<usize>> {
        let len = match self.byte()? {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => return None,
        };
        self.span(len)
    }
}

/// The bytes behind a buffer export (`bytes`, `mmap.mmap`, ...).
pub fn buffer_bytes(buffer: &PyBuffer<u8>) -> PyResult<&[u8]> {
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err("scan_frames needs a contiguous buffer"));
    }
    let len = buffer.len_bytes();
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: `PyBuffer::<u8>::get` checked the item size and format, and the buffer is
    // C-contiguous, so `buf_ptr` points at `len` initialised bytes. They stay valid while
    // `buffer` (an export) is alive: the exporter can neither free nor resize it meanwhile
    // (`mmap.close()` and `bytearray` resizes raise BufferError), and `scan_frames` holds
    // the GIL throughout, so no Python code writes to a writable one meanwhile.
    Ok(unsafe { std::slice::from_raw_parts(buffer.buf_ptr().cast::<u8>(), len) })
}

/// Verify and decode up to `max_records` frames of `buf` (bytes or mmap) from byte
/// `offset`, the first expected to carry `seq` and chain from `prev_hash`, stopping at
/// `end`, after `stop_seq`, or once the frames read reach `max_bytes` (a bound on the
/// memory a batch of large records holds). Returns `(records, next_offset, next_seq, last_hash,
/// problem)`: `records` a list of `(seq, source, payload, outputs, chain_hash)` tuples,
/// `problem` True iff the frame at `next_offset` failed a check (it is not included: let
/// the Python reader classify it).
/// The bounds every batch scan called from Python must respect (`what` names the caller
/// in the error).
pub fn check_window(
    what: &str,
    data: &[u8],
    offset: usize,
    end: usize,
    max_records: usize,
    max_bytes: usize,
) -> PyResult<()> {
    if end > data.len() || offset > end {
        return Err(PyValueError::new_err(format!(
            "{what}: need offset <= end <= len(buf), got {offset}, {end}, {}",
            data.len()
        )));
    }
    if max_records == 0 || max_bytes == 0 {
        return Err(PyValueError::new_err(format!("{what}: max_records and max_bytes must be positive")));
    }
    Ok(())
}

#[pyfunction]
#[pyo3(signature = (buf, offset, end, seq, prev_hash, stop_seq, max_records, max_bytes = usize::MAX))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
pub fn scan_frames<'py>(
    py: Python<'py>,
    buf: PyBuffer<u8>,
    offset: usize,
    end: usize,
    seq: u64,
    prev_hash: &[u8],
    stop_seq: u64,
    max_records: usize,
    max_bytes: usize,
) -> PyResult<(Bound<'py, PyList>, usize, u128, Bound<'py, PyBytes>, bool)> {
    let data = buffer_bytes(&buf)?;
    check_window("scan_frames", data, offset, end, max_records, max_bytes)?;
    // The GIL stays held: a batch takes well under a millisecond, and releasing it per
    // batch would let a busy thread hold replay up for a whole switch interval each time.
    let result = scan(data, offset, end, seq, prev_hash, stop_seq, max_records, max_bytes);
    let records = PyList::new(
        py,
        result.records.iter().map(|good| {
            // Checked as UTF-8 by the scan; CPython decodes it again anyway.
            let source = std::str::from_utf8(&data[good.source.clone()]).unwrap_or_default();
            (
                good.seq,
                PyString::new(py, source),
                PyBytes::new(py, &data[good.payload.clone()]),
                PyBytes::new(py, &data[good.outputs.clone()]),
                PyBytes::new(py, &data[good.chain_hash.clone()]),
            )
        }),
    )?;
    Ok((records, result.next_offset, result.next_seq, PyBytes::new(py, &result.last_hash), result.problem))
}

#[cfg(test)]
mod tests;
