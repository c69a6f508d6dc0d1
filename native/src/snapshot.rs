//! The engine's state document, byte-identical to `clearing/engine/persist.py`.
//!
//! Python writes it with msgspec's msgpack encoder from `array_like` Structs, so a record
//! is a plain array of its fields in declaration order, and msgspec always picks the
//! shortest msgpack form of an int, str or array header. `_big` fields are an int when
//! the value fits int64 and its decimal string otherwise. Equal states must give equal
//! bytes (snapshots are hashed and compared across implementations), so the encoder
//! mirrors every one of those choices; the decoder accepts any valid encoding of the
//! same types, as msgspec's typed decoder does.

use ethnum::I256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionDoc {
    pub market: String,
    pub qty_e8: I256,
    pub k_e16: I256,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountDoc {
    pub id: String,
    pub cash_e16: I256,
    pub positions: Vec<PositionDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarketDoc {
    pub id: String,
    pub imr_e8: I256,
    pub mmr_e8: I256,
    pub liq_fee_e8: I256,
    pub max_oracle_move_e8: Option<I256>,
    pub mark_e8: Option<I256>,
    pub oracle_seen: bool,
    pub held_e8: Option<I256>,
    /// (price_e8, qty_e8), best (highest) first.
    pub bids: Vec<(I256, I256)>,
    /// (price_e8, qty_e8), best (lowest) first.
    pub asks: Vec<(I256, I256)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDoc {
    pub version: u64,
    pub seq: u64,
    pub net_deposits_e16: I256,
    pub accounts: Vec<AccountDoc>,
    pub markets: Vec<MarketDoc>,
    pub fill_ids: Vec<String>,
}

pub const STATE_FORMAT_VERSION: u64 = 1;

// Field counts of the array_like records (persist.py's _StateRec, _AccountRec, ...).
const STATE_FIELDS: usize = 6;
const ACCOUNT_FIELDS: usize = 3;
const POSITION_FIELDS: usize = 3;
const MARKET_FIELDS: usize = 10;

// ---------------------------------------------------------------------------------------
// Encoding

/// Exactly the bytes `dump_state` writes for the same state (the caller passes accounts
/// sorted by id, positions sorted by market id, markets sorted by id, fill ids sorted:
/// code-point order, which for UTF-8 is byte order).
pub fn encode_state(doc: &StateDoc) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_size_bound(doc));
    put_array(&mut out, STATE_FIELDS);
    put_uint(&mut out, doc.version);
    put_uint(&mut out, doc.seq);
    put_big(&mut out, doc.net_deposits_e16);
    put_array(&mut out, doc.accounts.len());
    for account in &doc.accounts {
        put_array(&mut out, ACCOUNT_FIELDS);
        put_str(&mut out, &account.id);
        put_big(&mut out, account.cash_e16);
        put_array(&mut out, account.positions.len());
        for pos in &account.positions {
            put_array(&mut out, POSITION_FIELDS);
            put_str(&mut out, &pos.market);
            put_big(&mut out, pos.qty_e8);
            put_big(&mut out, pos.k_e16);
        }
    }
    put_array(&mut out, doc.markets.len());
    for market in &doc.markets {
        put_array(&mut out, MARKET_FIELDS);
        put_str(&mut out, &market.id);
        put_plain_int(&mut out, market.imr_e8);
        put_plain_int(&mut out, market.mmr_e8);
        put_plain_int(&mut out, market.liq_fee_e8);
        put_opt_big(&mut out, market.max_oracle_move_e8);
        put_opt_big(&mut out, market.mark_e8);
        out.push(if market.oracle_seen { 0xc3 } else { 0xc2 });
        put_opt_big(&mut out, market.held_e8);
        put_levels(&mut out, &market.bids);
        put_levels(&mut out, &market.asks);
    }
    put_array(&mut out, doc.fill_ids.len());
    for fill_id in &doc.fill_ids {
        put_str(&mut out, fill_id);
    }
    out
}

/// An upper bound of the encoded size (exact but for big-int strings), so the output is
/// allocated once: a million accounts would otherwise be copied on every doubling.
fn encoded_size_bound(doc: &StateDoc) -> usize {
    let mut n = 1 + 9 + 9 + big_size(doc.net_deposits_e16) + 5;
    for account in &doc.accounts {
        n += 1 + str_size(&account.id) + big_size(account.cash_e16) + 5;
        for pos in &account.positions {
            n += 1 + str_size(&pos.market) + big_size(pos.qty_e8) + big_size(pos.k_e16);
        }
    }
    n += 5;
    for market in &doc.markets {
        // 3 plain ints and 3 optional bigs (each at most a big's bound), a bool.
        n += 1 + str_size(&market.id) + 6 * BIG_STR_BOUND + 1 + 10;
        for &(price, qty) in market.bids.iter().chain(&market.asks) {
            n += 1 + big_size(price) + big_size(qty);
        }
    }
    n += 5;
    n + doc.fill_ids.iter().map(|id| str_size(id)).sum::<usize>()
}

// A decimal I256 has at most 78 characters (77 digits and a sign), behind a str8 header.
const BIG_STR_BOUND: usize = 2 + 78;

#[inline]
fn str_size(s: &str) -> usize {
    5 + s.len()
}

#[inline]
fn big_size(v: I256) -> usize {
    if as_i64(v).is_some() {
        9
    } else {
        BIG_STR_BOUND
    }
}

/// `Some` when `v` fits int64 (the test `_big` makes).
#[inline]
fn as_i64(v: I256) -> Option<i64> {
    let (hi, lo) = v.into_words();
    if hi == lo >> 127 && lo == (lo as i64) as i128 {
        Some(lo as i64)
    } else {
        None
    }
}

#[inline]
pub(crate) fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// msgspec writes a non-negative int in the unsigned forms and a negative one in the
/// shortest signed form.
#[inline]
fn put_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        put_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as u8);
    } else if v >= i8::MIN as i64 {
        out.extend_from_slice(&[0xd0, v as u8]);
    } else if v >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

#[inline]
fn put_big(out: &mut Vec<u8>, v: I256) {
    match as_i64(v) {
        Some(small) => put_int(out, small),
        None => put_decimal(out, v),
    }
}

/// `str(value)` as a msgpack str. Most values past int64 are cash (any balance above
/// ~922 units in e16), so the i128 case is formatted here without allocating.
fn put_decimal(out: &mut Vec<u8>, v: I256) {
    let (hi, lo) = v.into_words();
    if hi != lo >> 127 {
        return put_str(out, &v.to_string());
    }
    const CHUNK: u128 = 10_000_000_000_000_000_000; // 10^19: one u64's worth of digits
    let mut buf = [0u8; 40]; // i128: at most 39 digits and a sign
    let mut at = buf.len();
    let mut m = lo.unsigned_abs();
    while m >= CHUNK {
        let mut part = (m % CHUNK) as u64;
        m /= CHUNK;
        for _ in 0..19 {
            at -= 1;
            buf[at] = b'0' + (part % 10) as u8;
            part /= 10;
        }
    }
    let mut part = m as u64;
    loop {
        at -= 1;
        buf[at] = b'0' + (part % 10) as u8;
        part /= 10;
        if part == 0 {
            break;
        }
    }
    if lo < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    put_str_bytes(out, &buf[at..]);
}

#[inline]
fn put_opt_big(out: &mut Vec<u8>, v: Option<I256>) {
    match v {
        Some(v) => put_big(out, v),
        None => out.push(0xc0),
    }
}

/// A plain `int` field (imr, mmr, liq_fee): msgspec writes uint64 too. Wider values are
/// unreachable (the engine keeps these within 0..=1e8) and make Python's dump raise;
/// they are written as decimal strings here rather than panicking.
#[inline]
fn put_plain_int(out: &mut Vec<u8>, v: I256) {
    let (hi, lo) = v.into_words();
    if hi == 0 && (0..=u64::MAX as i128).contains(&lo) {
        put_uint(out, lo as u64);
    } else {
        put_big(out, v);
    }
}

fn put_levels(out: &mut Vec<u8>, levels: &[(I256, I256)]) {
    put_array(out, levels.len());
    for &(price, qty) in levels {
        out.push(0x92);
        put_big(out, price);
        put_big(out, qty);
    }
}

#[inline]
fn put_str(out: &mut Vec<u8>, s: &str) {
    put_str_bytes(out, s.as_bytes());
}

#[inline]
pub(crate) fn put_str_bytes(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&msgpack_len(n).to_be_bytes());
    }
    out.extend_from_slice(s);
}

#[inline]
fn put_array(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= 0xffff {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&msgpack_len(n).to_be_bytes());
    }
}

/// msgpack has no length past u32 (msgspec raises there too); 4 GiB ids or 4 billion
/// accounts cannot occur, so this is a bug-stop, not an input check.
fn msgpack_len(n: usize) -> u32 {
    u32::try_from(n).expect("msgpack cannot hold a string or array of 2^32 or more items")
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Decode what `dump_state` writes (any valid msgpack encoding of the same types: ints of
/// any width, str8/16/32, array16/32, decimal strings for big ints; extra trailing record
/// fields are skipped, as msgspec does). Never panics on any input bytes.
pub fn decode_state(bytes: &[u8]) -> Result<StateDoc, String> {
    let mut cur = Cursor { b: bytes, pos: 0 };
    let doc = read_state(&mut cur).map_err(|e| e.render())?;
    if cur.pos != bytes.len() {
        return Err(format!(
            "not an engine state: {} trailing bytes after the document (byte {})",
            bytes.len() - cur.pos,
            cur.pos
        ));
    }
    Ok(doc)
}

enum Seg {
    Field(&'static str),
    Index(usize),
}

struct DecodeError {
    msg: String,
    /// Byte offset where the problem was found.
    at: usize,
    /// Innermost segment first (pushed while the error travels outwards).
    path: Vec<Seg>,
    /// A version mismatch: reported as is, without the "not an engine state" prefix.
    version: bool,
}

impl DecodeError {
    fn render(&self) -> String {
        if self.version {
            return self.msg.clone();
        }
        let mut path = String::new();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Field(name) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                }
                Seg::Index(i) => path.push_str(&format!("[{i}]")),
            }
        }
        if path.is_empty() {
            format!("not an engine state: {} (byte {})", self.msg, self.at)
        } else {
            format!("not an engine state: {} at {} (byte {})", self.msg, path, self.at)
        }
    }
}

// Boxed: the Ok path stays small and `?` cheap in the per-account loop.
type Res<T> = Result<T, Box<DecodeError>>;

#[inline]
fn field<T>(r: Res<T>, name: &'static str) -> Res<T> {
    r.map_err(|mut e| {
        e.path.push(Seg::Field(name));
        e
    })
}

#[inline]
fn index<T>(r: Res<T>, i: usize) -> Res<T> {
    r.map_err(|mut e| {
        e.path.push(Seg::Index(i));
        e
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

/// What a msgpack marker byte starts, for error messages.
fn kind(m: u8) -> &'static str {
    match m {
        0x00..=0x7f | 0xcc..=0xd3 | 0xe0..=0xff => "int",
        0x80..=0x8f | 0xde | 0xdf => "map",
        0x90..=0x9f | 0xdc | 0xdd => "array",
        0xa0..=0xbf | 0xd9..=0xdb => "str",
        0xc0 => "nil",
        0xc1 => "the never-used byte 0xc1",
        0xc2 | 0xc3 => "bool",
        0xc4..=0xc6 => "bin",
        0xc7..=0xc9 | 0xd4..=0xd8 => "ext",
        0xca | 0xcb => "float",
    }
}

impl<'a> Cursor<'a> {
    fn err<T>(&self, msg: String) -> Res<T> {
        Err(Box::new(DecodeError { msg, at: self.pos, path: Vec::new(), version: false }))
    }

    fn truncated<T>(&self) -> Res<T> {
        self.err(format!("truncated: a value runs past the end of the data ({} bytes)", self.b.len()))
    }

    #[inline]
    fn peek(&self) -> Res<u8> {
        match self.b.get(self.pos) {
            Some(&m) => Ok(m),
            None => self.truncated(),
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = match self.pos.checked_add(n) {
            Some(end) if end <= self.b.len() => end,
            _ => return self.truncated(),
        };
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    #[inline]
    fn be(&mut self, n: usize) -> Res<u64> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn wrong<T>(&self, expected: &str, m: u8) -> Res<T> {
        self.err(format!("expected {expected}, got {}", kind(m)))
    }

    /// An int of any msgpack width; i128 holds both uint64 and int64.
    #[inline]
    fn int(&mut self) -> Res<i128> {
        let m = self.peek()?;
        self.int_after(m, "int")
    }

    #[inline]
    fn int_after(&mut self, m: u8, expected: &str) -> Res<i128> {
        let v = match m {
            0x00..=0x7f => {
                self.pos += 1;
                return Ok(m as i128);
            }
            0xe0..=0xff => {
                self.pos += 1;
                return Ok(m as i8 as i128);
            }
            0xcc..=0xcf => {
                self.pos += 1;
                self.be(1 << (m - 0xcc))? as i128
            }
            0xd0..=0xd3 => {
                self.pos += 1;
                let n = 1usize << (m - 0xd0);
                let raw = self.be(n)?;
                // Sign-extend from n bytes.
                let shift = 64 - 8 * n as u32;
                ((raw << shift) as i64 >> shift) as i128
            }
            _ => return self.wrong(expected, m),
        };
        Ok(v)
    }

    /// A str header's byte length, or None if `m` does not start a str.
    #[inline]
    fn str_len(&mut self, m: u8) -> Res<Option<usize>> {
        let n = match m {
            0xa0..=0xbf => {
                self.pos += 1;
                (m & 0x1f) as usize
            }
            0xd9..=0xdb => {
                self.pos += 1;
                self.be(1 << (m - 0xd9))? as usize
            }
            _ => return Ok(None),
        };
        Ok(Some(n))
    }

    #[inline]
    fn str_body(&mut self, n: usize) -> Res<&'a str> {
        let start = self.pos;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).or_else(|e| {
            self.pos = start + e.valid_up_to();
            self.err("invalid UTF-8 in a string".to_string())
        })
    }

    #[inline]
    fn str(&mut self) -> Res<&'a str> {
        let m = self.peek()?;
        match self.str_len(m)? {
            Some(n) => self.str_body(n),
            None => self.wrong("str", m),
        }
    }

    /// `Big` = int | str: an int of any width or a decimal string.
    #[inline]
    fn big(&mut self) -> Res<I256> {
        let m = self.peek()?;
        if let Some(n) = self.str_len(m)? {
            let start = self.pos;
            // Digits are ASCII: a valid decimal needs no separate UTF-8 check.
            let text = self.take(n)?;
            return match parse_decimal(text) {
                Some(v) => Ok(v),
                None => {
                    self.pos = start;
                    let shown: String = String::from_utf8_lossy(text).chars().take(40).collect();
                    self.err(format!("expected a decimal integer string, got {shown:?}"))
                }
            };
        }
        Ok(I256::new(self.int_after(m, "int or decimal string")?))
    }

    #[inline]
    fn opt_big(&mut self) -> Res<Option<I256>> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            return Ok(None);
        }
        self.big().map(Some)
    }

    #[inline]
    fn bool(&mut self) -> Res<bool> {
        match self.peek()? {
            0xc2 => {
                self.pos += 1;
                Ok(false)
            }
            0xc3 => {
                self.pos += 1;
                Ok(true)
            }
            m => self.wrong("bool", m),
        }
    }

    #[inline]
    fn array(&mut self) -> Res<usize> {
        let m = self.peek()?;
        match m {
            0x90..=0x9f => {
                self.pos += 1;
                Ok((m & 0x0f) as usize)
            }
            0xdc | 0xdd => {
                self.pos += 1;
                Ok(self.be(if m == 0xdc { 2 } else { 4 })? as usize)
            }
            _ => self.wrong("array", m),
        }
    }

    /// A record's array header: at least `fields` items (msgspec ignores extra trailing
    /// ones); returns how many extra to skip after the known fields.
    #[inline]
    fn record(&mut self, fields: usize) -> Res<usize> {
        let at = self.pos;
        let n = self.array()?;
        if n < fields {
            self.pos = at;
            return self.err(format!("expected an array of at least {fields} fields, got {n}"));
        }
        Ok(n - fields)
    }

    /// Capacity to reserve for `n` declared items of at least `min_size` bytes each: a
    /// lying header must not make us allocate more than the input could hold.
    #[inline]
    fn capacity(&self, n: usize, min_size: usize) -> usize {
        n.min(self.remaining() / min_size)
    }

    /// Skip `n` values of any type. Iterative, so hostile nesting cannot overflow the
    /// stack; each value takes at least one byte, so `todo` is bounded by the input.
    fn skip(&mut self, n: usize) -> Res<()> {
        let mut todo = n as u64;
        while todo > 0 {
            if todo > self.remaining() as u64 {
                return self.truncated();
            }
            todo -= 1;
            let m = self.peek()?;
            self.pos += 1;
            let (data, items) = match m {
                0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
                0x80..=0x8f => (0, 2 * (m & 0x0f) as u64),
                0x90..=0x9f => (0, (m & 0x0f) as u64),
                0xa0..=0xbf => ((m & 0x1f) as u64, 0),
                0xc1 => {
                    self.pos -= 1;
                    return self.err("invalid byte 0xc1".to_string());
                }
                0xc4 | 0xd9 => (self.be(1)?, 0),
                0xc5 | 0xda => (self.be(2)?, 0),
                0xc6 | 0xdb => (self.be(4)?, 0),
                0xc7 => (self.be(1)? + 1, 0),
                0xc8 => (self.be(2)? + 1, 0),
                0xc9 => (self.be(4)? + 1, 0),
                0xca => (4, 0),
                0xcb => (8, 0),
                0xcc..=0xcf => (1 << (m - 0xcc), 0),
                0xd0..=0xd3 => (1 << (m - 0xd0), 0),
                0xd4..=0xd8 => (1 + (1 << (m - 0xd4)), 0),
                0xdc => (0, self.be(2)?),
                0xdd => (0, self.be(4)?),
                0xde => (0, 2 * self.be(2)?),
                0xdf => (0, 2 * self.be(4)?),
            };
            self.take(usize::try_from(data).unwrap_or(usize::MAX))?;
            todo += items;
        }
        Ok(())
    }
}

/// A decimal integer as Python's `str(int)` writes it: an optional sign and ASCII digits
/// (stricter than Python's `int()`, which also takes "1_000", spaces and other scripts'
/// digits; `dump_state` never writes those).
fn parse_decimal(b: &[u8]) -> Option<I256> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    // Up to 38 digits fit a u128 (nearly every big value: cash and K in e16), taken 19
    // digits (a u64) at a time: one u128 multiply per chunk instead of one per digit.
    if digits.len() <= 38 {
        let mut m = 0u128;
        for chunk in digits.chunks(19) {
            let mut part = 0u64;
            for &d in chunk {
                let d = d.wrapping_sub(b'0');
                if d > 9 {
                    return None;
                }
                part = part * 10 + d as u64;
            }
            m = m * 10u128.pow(chunk.len() as u32) + part as u128;
        }
        let v = I256::new(m as i128); // < 10^38 < 2^127: no sign change
        return Some(if neg { -v } else { v });
    }
    let ten = I256::new(10);
    let mut v = I256::ZERO;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = I256::new((d - b'0') as i128);
        // Accumulating towards the sign reaches I256::MIN without overflow.
        v = v.checked_mul(ten)?;
        v = if neg { v.checked_sub(d)? } else { v.checked_add(d)? };
    }
    Some(v)
}

fn read_state(c: &mut Cursor) -> Res<StateDoc> {
    let at = c.pos;
    let n = c.array()?;
    if n == 0 {
        c.pos = at;
        return c.err("expected an array of at least 6 fields, got 0".to_string());
    }
    // The version first: a document of another version is named as such rather than by
    // the first field that does not fit this layout.
    let version = field(c.int(), "version")?;
    if version != STATE_FORMAT_VERSION as i128 {
        return Err(Box::new(DecodeError {
            msg: format!("state format version {version}; this build reads {STATE_FORMAT_VERSION}"),
            at,
            path: Vec::new(),
            version: true,
        }));
    }
    if n < STATE_FIELDS {
        c.pos = at;
        return c.err(format!("expected an array of at least {STATE_FIELDS} fields, got {n}"));
    }
    let seq_at = c.pos;
    let seq = field(c.int(), "seq")?;
    let seq = match u64::try_from(seq) {
        Ok(seq) => seq,
        Err(_) => {
            c.pos = seq_at;
            return field(c.err(format!("seq must be a uint64, got {seq}")), "seq");
        }
    };
    let net_deposits_e16 = field(c.big(), "net_deposits_e16")?;
    let accounts = field(read_accounts(c), "accounts")?;
    let markets = field(read_markets(c), "markets")?;
    let fill_ids = field(read_fill_ids(c), "fill_ids")?;
    c.skip(n - STATE_FIELDS)?;
    Ok(StateDoc { version: STATE_FORMAT_VERSION, seq, net_deposits_e16, accounts, markets, fill_ids })
}

fn read_accounts(c: &mut Cursor) -> Res<Vec<AccountDoc>> {
    let n = c.array()?;
    // An account takes at least 4 bytes: header, empty id, int, empty positions.
    let mut accounts = Vec::with_capacity(c.capacity(n, 4));
    for i in 0..n {
        accounts.push(index(read_account(c), i)?);
    }
    Ok(accounts)
}

#[inline]
fn read_account(c: &mut Cursor) -> Res<AccountDoc> {
    let extra = c.record(ACCOUNT_FIELDS)?;
    let id = field(c.str(), "id")?.to_owned();
    let cash_e16 = field(c.big(), "cash_e16")?;
    let positions = field(read_positions(c), "positions")?;
    c.skip(extra)?;
    Ok(AccountDoc { id, cash_e16, positions })
}

#[inline]
fn read_positions(c: &mut Cursor) -> Res<Vec<PositionDoc>> {
    let n = c.array()?;
    let mut positions = Vec::with_capacity(c.capacity(n, 4));
    for i in 0..n {
        positions.push(index(read_position(c), i)?);
    }
    Ok(positions)
}

#[inline]
fn read_position(c: &mut Cursor) -> Res<PositionDoc> {
    let extra = c.record(POSITION_FIELDS)?;
    let market = field(c.str(), "market")?.to_owned();
    let qty_e8 = field(c.big(), "qty_e8")?;
    let k_e16 = field(c.big(), "k_e16")?;
    c.skip(extra)?;
    Ok(PositionDoc { market, qty_e8, k_e16 })
}

fn read_markets(c: &mut Cursor) -> Res<Vec<MarketDoc>> {
    let n = c.array()?;
    let mut markets = Vec::with_capacity(c.capacity(n, 11));
    for i in 0..n {
        markets.push(index(read_market(c), i)?);
    }
    Ok(markets)
}

fn read_market(c: &mut Cursor) -> Res<MarketDoc> {
    let extra = c.record(MARKET_FIELDS)?;
    let id = field(c.str(), "id")?.to_owned();
    // Plain `int` fields: Python's decoder refuses strings here.
    let imr_e8 = I256::new(field(c.int(), "imr_e8")?);
    let mmr_e8 = I256::new(field(c.int(), "mmr_e8")?);
    let liq_fee_e8 = I256::new(field(c.int(), "liq_fee_e8")?);
    let max_oracle_move_e8 = field(c.opt_big(), "max_oracle_move_e8")?;
    let mark_e8 = field(c.opt_big(), "mark_e8")?;
    let oracle_seen = field(c.bool(), "oracle_seen")?;
    let held_e8 = field(c.opt_big(), "held_e8")?;
    let bids = field(read_levels(c), "bids")?;
    let asks = field(read_levels(c), "asks")?;
    c.skip(extra)?;
    Ok(MarketDoc { id, imr_e8, mmr_e8, liq_fee_e8, max_oracle_move_e8, mark_e8, oracle_seen, held_e8, bids, asks })
}

fn read_levels(c: &mut Cursor) -> Res<Vec<(I256, I256)>> {
    let n = c.array()?;
    let mut levels = Vec::with_capacity(c.capacity(n, 3));
    for i in 0..n {
        levels.push(index(read_level(c), i)?);
    }
    Ok(levels)
}

#[inline]
fn read_level(c: &mut Cursor) -> Res<(I256, I256)> {
    let at = c.pos;
    // A tuple, not a record: exactly two items.
    let n = c.array()?;
    if n != 2 {
        c.pos = at;
        return c.err(format!("expected a (price, qty) array of length 2, got {n}"));
    }
    Ok((index(c.big(), 0)?, index(c.big(), 1)?))
}

fn read_fill_ids(c: &mut Cursor) -> Res<Vec<String>> {
    let n = c.array()?;
    let mut ids = Vec::with_capacity(c.capacity(n, 1));
    for i in 0..n {
        ids.push(index(c.str(), i)?.to_owned());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests;
