//! The Kafka daemon's batch step: apply a run of inputs and write their journal records
//! (chain hash and MessagePack encoding) without a Python object per input.
//!
//! A record is written as msgspec writes `clearing.journal.Record` (an array-like struct):
//! `[seq, source, payload, outputs, chain_hash]` with the shortest int, str and bin forms.
//! `tests/integration/test_daemon.py` holds the bytes equal to the Python path's.

use crate::engine::Engine;
use crate::journal::compute_chain_hash;
use crate::json_in::{parse_input_rules, Input};
use crate::snapshot::{put_str_bytes, put_uint};

/// Where a run stopped: every input done, or before one this core does not finish alone.
pub enum Stop {
    Done,
    /// The fast parser declined it: nothing applied, no seq counted.
    Deferred(usize),
    /// Applied and refused with this code (seq counted, state untouched): Python writes
    /// the reject.
    Refused(usize, i64),
}

pub struct Run {
    pub stop: Stop,
    /// The records written, back to back (a MessagePack array's items, without its header).
    pub records: Vec<u8>,
    /// Where each record ends in `records`.
    pub ends: Vec<usize>,
    pub head_hash: [u8; 32],
    /// Each input's type, one byte per record (`kind_code`), for the daemon's metrics.
    pub kinds: Vec<u8>,
    /// (index into the inputs, output events) of each input that had outputs.
    pub outputs: Vec<(usize, Vec<Vec<u8>>)>,
}

/// Apply `inputs[start..]` (payload, journal source) in order, chaining from `prev_hash`.
/// A panic (overflow past 256 bits) propagates: the caller's batch is then abandoned.
pub fn apply_run<'a>(
    engine: &mut Engine,
    inputs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    start: usize,
    prev_hash: [u8; 32],
    records_capacity: usize,
) -> Run {
    let mut run = Run {
        stop: Stop::Done,
        records: Vec::with_capacity(records_capacity),
        ends: Vec::new(),
        kinds: Vec::new(),
        head_hash: prev_hash,
        outputs: Vec::new(),
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut joined: Vec<u8> = Vec::new();
    for (index, (payload, source)) in inputs.enumerate().map(|(i, item)| (start + i, item)) {
        let Some(input) = parse_input_rules(payload, engine.rules) else {
            run.stop = Stop::Deferred(index);
            return run;
        };
        let kind = kind_code(&input);
        engine.seq += 1;
        out.clear();
        if let Err(refusal) = engine.apply(&input, &mut out) {
            run.stop = Stop::Refused(index, refusal as i64);
            return run;
        }
        joined.clear();
        for event in &out {
            joined.extend_from_slice(event);
            joined.push(b'\n');
        }
        let seq = engine.seq;
        run.head_hash = compute_chain_hash(&run.head_hash, seq, source, payload, &joined);
        put_record(&mut run.records, seq, source, payload, &joined, &run.head_hash);
        run.ends.push(run.records.len());
        run.kinds.push(kind);
        if !out.is_empty() {
            run.outputs.push((index, std::mem::take(&mut out)));
        }
    }
    run
}

/// 1 market, 2 deposit, 3 withdraw, 4 fill, 5 oracle, 6 book (0 is left for "not
/// known here": an input Python applied).
fn kind_code(input: &Input<'_>) -> u8 {
    match input {
        Input::Market { .. } => 1,
        Input::Deposit { .. } => 2,
        Input::Withdraw { .. } => 3,
        Input::Fill(_) => 4,
        Input::Oracle { .. } => 5,
        Input::Book { .. } => 6,
        Input::Funding { .. } => 0, // never parsed here (Python decodes it)
    }
}

fn put_record(buf: &mut Vec<u8>, seq: u64, source: &[u8], payload: &[u8], outputs: &[u8], hash: &[u8]) {
    buf.push(0x95); // fixarray of the struct's five fields
    put_uint(buf, seq);
    put_str_bytes(buf, source);
    put_bin(buf, payload);
    put_bin(buf, outputs);
    put_bin(buf, hash);
}

fn put_bin(buf: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n <= 0xff {
        buf.extend_from_slice(&[0xc4, n as u8]);
    } else if n <= 0xffff {
        buf.push(0xc5);
        buf.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        buf.push(0xc6);
        // Inputs and outputs are bounded far below 4 GiB by the daemon's limits.
        buf.extend_from_slice(&u32::try_from(n).expect("journal field of 4 GiB or more").to_be_bytes());
    }
    buf.extend_from_slice(b);
}
