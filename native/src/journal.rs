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
mod tests {
    use super::*;

    const GENESIS: [u8; 32] = [0; 32];
    const SEG_HEADER: usize = 52;

    /// How to encode the body's integers and lengths.
    #[derive(Clone, Copy)]
    enum Width {
        Shortest,
        Widest,
    }

    fn push_len(out: &mut Vec<u8>, len: usize, fix: Option<(u8, usize)>, tags: [u8; 3], width: Width) {
        match (width, fix) {
            (Width::Shortest, Some((base, max))) if len <= max => out.push(base | len as u8),
            (Width::Shortest, _) if len <= 0xff && tags[0] != 0 => {
                out.push(tags[0]);
                out.push(len as u8);
            }
            (Width::Shortest, _) if len <= 0xffff => {
                out.push(tags[1]);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(tags[2]);
                out.extend_from_slice(&(len as u32).to_be_bytes());
            }
        }
    }

    fn body(seq: u64, source: &str, payload: &[u8], outputs: &[u8], hash: &[u8], width: Width) -> Vec<u8> {
        let mut b = Vec::new();
        push_len(&mut b, 5, Some((0x90, 15)), [0, 0xdc, 0xdd], width);
        match width {
            Width::Shortest if seq < 0x80 => b.push(seq as u8),
            Width::Shortest if seq <= u64::from(u32::MAX) => {
                b.push(0xce);
                b.extend_from_slice(&(seq as u32).to_be_bytes());
            }
            _ => {
                b.push(0xcf);
                b.extend_from_slice(&seq.to_be_bytes());
            }
        }
        push_len(&mut b, source.len(), Some((0xa0, 31)), [0xd9, 0xda, 0xdb], width);
        b.extend_from_slice(source.as_bytes());
        for field in [payload, outputs, hash] {
            push_len(&mut b, field.len(), None, [0xc4, 0xc5, 0xc6], width);
            b.extend_from_slice(field);
        }
        b
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let len = body.len() as u32;
        let mut f = vec![0xc1, 0x01];
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&(len ^ u32::MAX).to_be_bytes());
        f.extend_from_slice(&crc32c::crc32c(body).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    struct Rec {
        seq: u64,
        source: String,
        payload: Vec<u8>,
        outputs: Vec<u8>,
        hash: [u8; 32],
    }

    /// A segment (zeroed header) of `n` chained records from `first`, and the records.
    fn segment(first: u64, n: u64, width: Width) -> (Vec<u8>, Vec<Rec>) {
        let mut buf = vec![0u8; SEG_HEADER];
        let mut recs = Vec::new();
        let mut prev = GENESIS;
        for seq in (0..n).map(|i| first + i) {
            let source = format!("file:/in-é.jsonl:{seq}");
            let payload = vec![b'p'; (seq % 1000) as usize * 37 % 300];
            let outputs = if seq % 3 == 0 { Vec::new() } else { format!("out-{seq}").into_bytes() };
            let hash = compute_chain_hash(&prev, seq, source.as_bytes(), &payload, &outputs);
            buf.extend(frame(&body(seq, &source, &payload, &outputs, &hash, width)));
            prev = hash;
            recs.push(Rec { seq, source, payload, outputs, hash });
        }
        (buf, recs)
    }

    fn scan_all(buf: &[u8], first: u64) -> Scan {
        scan(buf, SEG_HEADER, buf.len(), first, &GENESIS, u64::MAX, usize::MAX, usize::MAX)
    }

    #[test]
    fn chain_hash_matches_python() {
        // clearing.journal._format.chain_hash(bytes(32), 7, "src".encode(), b"pay", b"out").hex()
        let h = compute_chain_hash(&GENESIS, 7, b"src", b"pay", b"out");
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "1d354aa8aa3e3a31d301ef6e772de6caa473733e790efa756433770404e3ce15");
    }

    #[test]
    fn reads_a_good_segment_in_either_encoding_width() {
        for width in [Width::Shortest, Width::Widest] {
            let (buf, recs) = segment(1, 50, width);
            let s = scan_all(&buf, 1);
            assert!(!s.problem);
            assert_eq!(s.next_offset, buf.len());
            assert_eq!(s.next_seq, 51);
            assert_eq!(s.last_hash, recs[49].hash);
            assert_eq!(s.records.len(), 50);
            for (good, rec) in s.records.iter().zip(&recs) {
                assert_eq!(good.seq, rec.seq);
                assert_eq!(&buf[good.source.clone()], rec.source.as_bytes());
                assert_eq!(&buf[good.payload.clone()], &rec.payload[..]);
                assert_eq!(&buf[good.outputs.clone()], &rec.outputs[..]);
                assert_eq!(&buf[good.chain_hash.clone()], &rec.hash[..]);
            }
        }
    }

    #[test]
    fn batches_chain_on_and_honour_stop_seq() {
        let (buf, recs) = segment(10, 20, Width::Shortest);
        let a = scan(&buf, SEG_HEADER, buf.len(), 10, &GENESIS, u64::MAX, 7, usize::MAX);
        assert_eq!((a.records.len(), a.next_seq, a.problem), (7, 17, false));
        assert_eq!(a.next_offset, a.records[6].end);
        let b = scan(&buf, a.next_offset, buf.len(), 17, &a.last_hash, 21, 100, usize::MAX);
        assert_eq!((b.records.len(), b.next_seq, b.problem), (5, 22, false));
        assert_eq!(b.last_hash, recs[11].hash);
        // Nothing to do: at end, or past stop_seq.
        let c = scan(&buf, buf.len(), buf.len(), 30, &recs[19].hash, u64::MAX, 100, usize::MAX);
        assert_eq!((c.records.len(), c.next_offset, c.next_seq, c.problem), (0, buf.len(), 30, false));
        assert_eq!(c.last_hash, recs[19].hash);
        let d = scan(&buf, b.next_offset, buf.len(), 22, &b.last_hash, 21, 100, usize::MAX);
        assert_eq!((d.records.len(), d.next_offset, d.problem), (0, b.next_offset, false));
        // `end` short of the buffer: frames past it are not read.
        let e = scan(&buf, SEG_HEADER, a.next_offset, 10, &GENESIS, u64::MAX, 100, usize::MAX);
        assert_eq!((e.records.len(), e.next_offset, e.problem), (7, a.next_offset, false));
    }

    #[test]
    fn byte_limit_ends_a_batch_after_the_frame_reaching_it() {
        let (buf, _) = segment(1, 20, Width::Shortest);
        let ends: Vec<usize> = scan_all(&buf, 1).records.iter().map(|g| g.end).collect();
        // One byte is enough for one frame; the limit is checked before each frame.
        let one = scan(&buf, SEG_HEADER, buf.len(), 1, &GENESIS, u64::MAX, 100, 1);
        assert_eq!((one.records.len(), one.next_offset, one.problem), (1, ends[0], false));
        let limit = ends[4] - SEG_HEADER;
        let five = scan(&buf, SEG_HEADER, buf.len(), 1, &GENESIS, u64::MAX, 100, limit);
        assert_eq!((five.records.len(), five.next_seq), (5, 6));
        let six = scan(&buf, SEG_HEADER, buf.len(), 1, &GENESIS, u64::MAX, 100, limit + 1);
        assert_eq!((six.records.len(), six.next_seq), (6, 7));
    }

    /// The scan stops at the damaged frame, keeps the ones before it, and flags it.
    fn assert_stops_at(buf: &[u8], first: u64, bad_index: usize) {
        let s = scan_all(buf, first);
        assert!(s.problem, "damage at frame {bad_index} not caught");
        assert_eq!(s.records.len(), bad_index);
        let at = if bad_index == 0 { SEG_HEADER } else { s.records[bad_index - 1].end };
        assert_eq!(s.next_offset, at);
        assert_eq!(s.next_seq, first as u128 + bad_index as u128);
    }

    #[test]
    fn every_check_stops_the_scan() {
        let (buf, _) = segment(1, 5, Width::Shortest);
        let starts: Vec<usize> = scan_all(&buf, 1).records.iter().map(|g| g.end).collect();
        let third = starts[1]; // frame of seq 3
        let patch = |at: usize, f: &dyn Fn(&mut u8)| {
            let mut b = buf.clone();
            f(&mut b[at]);
            b
        };
        assert_stops_at(&patch(third, &|b| *b = 0xc2), 1, 2); // magic
        assert_stops_at(&patch(third + 1, &|b| *b = 2), 1, 2); // version
        assert_stops_at(&patch(third + 5, &|b| *b ^= 1), 1, 2); // length check
        assert_stops_at(&patch(third + 10, &|b| *b ^= 1), 1, 2); // CRC field
        assert_stops_at(&patch(third + 20, &|b| *b ^= 1), 1, 2); // body
        assert_stops_at(&buf[..buf.len() - 1], 1, 4); // body past end
        assert_stops_at(&buf[..starts[3] + 13], 1, 4); // header past end

        // Wrong expected seq or previous hash.
        assert_stops_at(&buf, 2, 0);
        let s = scan(&buf, SEG_HEADER, buf.len(), 1, &[1; 32], u64::MAX, 10, usize::MAX);
        assert!(s.problem && s.records.is_empty());
        assert_eq!(s.last_hash, [1; 32]);
    }

    /// Bodies with a valid CRC but content the scanner must refuse.
    #[test]
    fn refuses_bad_bodies() {
        let (source, payload, outputs) = ("s", b"p".as_slice(), b"".as_slice());
        let good_hash = compute_chain_hash(&GENESIS, 1, source.as_bytes(), payload, outputs);
        let good = body(1, source, payload, outputs, &good_hash, Width::Shortest);
        let with = |b: Vec<u8>| {
            let mut buf = vec![0u8; SEG_HEADER];
            buf.extend(frame(&b));
            buf
        };
        assert!(!scan_all(&with(good.clone()), 1).problem);
        let mut cases: Vec<Vec<u8>> = Vec::new();
        let mut trailing = good.clone();
        trailing.push(0);
        cases.push(trailing);
        cases.push(good[..good.len() - 1].to_vec());
        let mut six = good.clone();
        six[0] = 0x96;
        six.push(0xc0);
        cases.push(six);
        let mut four = body(1, source, payload, outputs, &good_hash, Width::Shortest);
        four[0] = 0x94;
        cases.push(four[..four.len() - 34].to_vec());
        // Negative seq (int8 -1), seq 2, bin source, str payload, invalid UTF-8, short hash.
        let mut neg = good.clone();
        neg.splice(1..2, [0xd0, 0xff]);
        cases.push(neg);
        cases.push(body(2, source, payload, outputs, &good_hash, Width::Shortest));
        let mut bin_source = good.clone();
        bin_source.splice(2..3, [0xc4, 0x01]);
        cases.push(bin_source);
        let mut str_payload = good.clone();
        str_payload.splice(4..6, [0xa1]);
        cases.push(str_payload);
        let bad_utf8 = [0x95, 0x01, 0xa1, 0xff, 0xc4, 0x00, 0xc4, 0x00, 0xc4, 0x00];
        cases.push(bad_utf8.to_vec());
        cases.push(body(1, source, payload, outputs, &good_hash[..31], Width::Shortest));
        cases.push(vec![0x80]); // a map
        cases.push(Vec::new());
        for (i, case) in cases.into_iter().enumerate() {
            let s = scan_all(&with(case), 1);
            assert!(s.problem && s.records.is_empty(), "case {i} accepted");
        }
    }

    #[test]
    fn seq_u64_max_ends_the_batch_without_overflow() {
        let (buf, recs) = segment(u64::MAX - 1, 2, Width::Shortest);
        let s = scan_all(&buf, u64::MAX - 1);
        assert_eq!((s.records.len(), s.problem), (2, false));
        assert_eq!(s.next_seq, u128::from(u64::MAX) + 1);
        assert_eq!(s.last_hash, recs[1].hash);
    }

    #[test]
    fn checking_ahead_visits_and_returns_what_the_plain_scan_does() {
        let (buf, _) = segment(1, 300, Width::Shortest);
        let mut damaged = buf.clone();
        let middle = SEG_HEADER + (buf.len() - SEG_HEADER) * 2 / 3;
        damaged[middle] ^= 0x55;
        for data in [&buf, &damaged] {
            // The visitor ends the batch at frame `stop_after` (or never), under various limits.
            for stop_after in [0usize, 1, 63, 64, 65, 130, 299, usize::MAX] {
                for (max_records, max_bytes, stop_seq) in
                    [(usize::MAX, usize::MAX, u64::MAX), (100, usize::MAX, u64::MAX), (usize::MAX, 4000, 250)]
                {
                    let run = |ahead: bool| {
                        let mut seen = Vec::new();
                        let visit = |_: &[u8], good: Good| {
                            seen.push((good.seq, good.end, good.payload.clone()));
                            seen.len() <= stop_after
                        };
                        let args = (data.as_slice(), SEG_HEADER, data.len(), 1, &GENESIS[..], stop_seq);
                        let result = if ahead {
                            scan_each_ahead(
                                args.0,
                                args.1,
                                args.2,
                                args.3,
                                args.4,
                                args.5,
                                max_records,
                                max_bytes,
                                visit,
                            )
                        } else {
                            scan_each(args.0, args.1, args.2, args.3, args.4, args.5, max_records, max_bytes, visit)
                        };
                        (seen, result)
                    };
                    assert_eq!(run(true), run(false), "stop_after {stop_after}, limits {max_records} {max_bytes}");
                }
            }
        }
    }

    #[test]
    fn random_damage_never_panics_and_never_passes() {
        let (buf, _) = segment(1, 40, Width::Shortest);
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..20_000 {
            let mut b = buf.clone();
            let flips = 1 + next() % 4;
            let mut first_damage = usize::MAX;
            for _ in 0..flips {
                let at = SEG_HEADER + (next() as usize) % (b.len() - SEG_HEADER);
                let old = b[at];
                b[at] = next() as u8;
                if b[at] != old {
                    first_damage = first_damage.min(at);
                }
            }
            let cut = if next() % 4 == 0 { (next() as usize) % b.len() } else { b.len() };
            let s = scan(&b, SEG_HEADER.min(cut), cut, 1, &GENESIS, u64::MAX, usize::MAX, usize::MAX);
            // No record that overlaps damaged bytes may come back as good.
            assert!(s.records.iter().all(|g| g.end <= first_damage));
            assert!(s.next_offset <= cut);
        }
        // Pure noise, everywhere.
        for _ in 0..2_000 {
            let len = (next() % 600) as usize;
            let noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let s = scan(&noise, 0, len, next() % 3, &GENESIS, u64::MAX, usize::MAX, usize::MAX);
            assert!(s.records.is_empty() || s.records.iter().all(|g| g.end <= len));
        }
    }
}
