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
                        scan_each_ahead(args.0, args.1, args.2, args.3, args.4, args.5, max_records, max_bytes, visit)
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
