//! Fast path for decoding one raw input, and msgspec-exact JSON string output.
//!
//! `parse_input` accepts only inputs it can prove Python's `decode_input` turns into a
//! `Parsed*` value, and returns the same fields and e8 integers; anything else is `None` and
//! the caller falls back to the Python decoder, which is exact (and names the reject).
//!
//! One pass over the bytes: every value is validated as strict JSON (unknown fields too)
//! while the values of the recognised field names are kept as borrowed tokens; the tokens
//! are interpreted once the whole object is read, so `type` may appear anywhere.
//!
//! Deliberate gaps (`None` although Python accepts):
//! - any string (key or value, unknown fields included) containing a backslash escape;
//! - a recognised field name (any of the 18 names of any input type, see `field_index`)
//!   appearing twice in the object; Python keeps the last one.

const E8: i128 = 100_000_000;
/// SPEC §1: wire magnitudes above 1e15 are invalid; in e8 units.
#[cfg(test)]
const MAX_WIRE_E8: i128 = 1_000_000_000_000_000 * E8;
/// `events.MAX_NESTING_DEPTH`: brackets nest at most this deep in a valid input.
const MAX_DEPTH: u32 = 64;
/// 10^(8 - number of decimals given), to scale a fraction to e8.
const FRACTION_SCALE: [u64; 9] = [100_000_000, 10_000_000, 1_000_000, 100_000, 10_000, 1_000, 100, 10, 1];

pub struct FillIn<'a> {
    pub fill_id: &'a str,
    pub market: &'a str,
    pub price_e8: i128,
    pub qty_e8: i128,
    pub buyer: &'a str,
    pub seller: &'a str,
    pub buyer_fee_e8: i128,
    pub seller_fee_e8: i128,
}

pub enum Input<'a> {
    Market {
        market: &'a str,
        imr_e8: i128,
        mmr_e8: i128,
        liq_fee_e8: i128,
        max_oracle_move_e8: Option<i128>,
    },
    Deposit {
        account: &'a str,
        amount_e8: i128,
    },
    Withdraw {
        account: &'a str,
        amount_e8: i128,
    },
    Fill(FillIn<'a>),
    Oracle {
        market: &'a str,
        price_e8: i128,
    },
    /// Levels in input order, NOT aggregated (the engine aggregates repeated prices).
    Book {
        market: &'a str,
        bids: Vec<(i128, i128)>,
        asks: Vec<(i128, i128)>,
    },
}

// Recognised field names, over all input types: their values are kept as tokens.
const F_TYPE: usize = 0;
const F_MARKET: usize = 1;
const F_IMR: usize = 2;
const F_MMR: usize = 3;
const F_LIQ_FEE: usize = 4;
const F_MAX_ORACLE_MOVE: usize = 5;
const F_ACCOUNT: usize = 6;
const F_AMOUNT: usize = 7;
const F_FILL_ID: usize = 8;
const F_PRICE: usize = 9;
const F_QTY: usize = 10;
const F_BUYER: usize = 11;
const F_SELLER: usize = 12;
const F_BUYER_FEE: usize = 13;
const F_SELLER_FEE: usize = 14;
const F_BIDS: usize = 15;
const F_ASKS: usize = 16;
const F_TS: usize = 17;
const N_FIELDS: usize = 18;

fn field_index(key: &[u8]) -> Option<usize> {
    Some(match key {
        b"type" => F_TYPE,
        b"market" => F_MARKET,
        b"imr" => F_IMR,
        b"mmr" => F_MMR,
        b"liq_fee" => F_LIQ_FEE,
        b"max_oracle_move" => F_MAX_ORACLE_MOVE,
        b"account" => F_ACCOUNT,
        b"amount" => F_AMOUNT,
        b"fill_id" => F_FILL_ID,
        b"price" => F_PRICE,
        b"qty" => F_QTY,
        b"buyer" => F_BUYER,
        b"seller" => F_SELLER,
        b"buyer_fee" => F_BUYER_FEE,
        b"seller_fee" => F_SELLER_FEE,
        b"bids" => F_BIDS,
        b"asks" => F_ASKS,
        b"ts" => F_TS,
        _ => return None,
    })
}

/// A recognised field's value, already validated as JSON; meaning depends on `type`.
#[derive(Clone, Copy)]
enum Tok<'a> {
    Absent,
    /// A string without escapes (its content).
    Str(&'a str),
    /// A JSON integer literal: `-?(0|[1-9][0-9]*)`.
    Int(&'a [u8]),
    /// A list of valid `[price, qty]` levels, stored aside in `bids`/`asks`.
    Levels,
    /// Any other JSON value (float, bool, null, array, object).
    Other,
}

/// Index of the first byte at or after `i` that is `"`, `\\` or a control byte (< 0x20),
/// or `b.len()`: what ends an unescaped JSON string, and what msgspec escapes.
#[inline(always)]
fn first_special(b: &[u8], mut i: usize) -> usize {
    // Eight bytes at a time. Each mask's lowest flagged byte is exact (a borrow only flags
    // bytes above a true match), so the lowest flag of their union is the first special.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let special = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let special = special & HIGH;
        if special != 0 {
            return i + (special.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    /// A string at `"`; `None` on an escape (a gap, not an error) or a raw control byte.
    #[inline(always)]
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        self.i = first_special(self.b, start);
        if self.peek()? != b'"' {
            return None;
        }
        let s = self.text.get(start..self.i)?;
        self.i += 1;
        Some(s)
    }

    #[inline]
    fn digits(&mut self) -> usize {
        let rest = &self.b[self.i..];
        let n = rest.iter().position(|c| !c.is_ascii_digit()).unwrap_or(rest.len());
        self.i += n;
        n
    }

    /// A JSON number (strict grammar); returns its text and whether it is an integer.
    fn number(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        let mut is_int = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
            is_int = false;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
            is_int = false;
        }
        // A following digit (as in `01`) is caught by the caller's separator check.
        Some((&self.b[start..self.i], is_int))
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// Validate and skip any JSON value; `depth` counts the containers around it.
    fn skip_value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
            }
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.ws();
                        }
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.ws();
                        }
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// A top-level field's value as a token (`depth` 1: inside the input object).
    #[inline]
    fn token(&mut self) -> Option<Tok<'a>> {
        match self.peek()? {
            b'"' => Some(Tok::Str(self.string()?)),
            b'-' | b'0'..=b'9' => {
                let (text, is_int) = self.number()?;
                Some(if is_int { Tok::Int(text) } else { Tok::Other })
            }
            _ => {
                self.skip_value(1)?;
                Some(Tok::Other)
            }
        }
    }

    /// One wire number inside a level: a decimal string or an integer, parsed to e8.
    #[inline]
    fn level_num(&mut self) -> Option<i128> {
        match self.peek()? {
            b'"' => parse_decimal_e8(self.string()?.as_bytes()),
            _ => {
                let (text, is_int) = self.number()?;
                if is_int {
                    int_e8(text)
                } else {
                    None
                }
            }
        }
    }

    /// `[[price, qty], ...]` with every price and qty > 0, or `None` (nothing consumed
    /// that matters: the caller rewinds and validates the value generically).
    fn levels(&mut self) -> Option<Vec<(i128, i128)>> {
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(Vec::new());
        }
        // One allocation for a typical depth, instead of growing 4 -> 8 -> 16.
        let mut out = Vec::with_capacity(16);
        loop {
            self.eat(b'[')?;
            self.ws();
            let price = self.level_num()?;
            self.ws();
            self.eat(b',')?;
            self.ws();
            let qty = self.level_num()?;
            self.ws();
            self.eat(b']')?;
            if price <= 0 || qty <= 0 {
                return None;
            }
            out.push((price, qty));
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(out);
                }
                _ => return None,
            }
        }
    }
}

/// ASCII digits as a `u64`. Wrapping: callers bound the count (at most 19 digits cannot
/// overflow) or discard the result of longer runs, and skip the overflow-check branches.
#[inline]
fn digits_u64(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |acc, &d| acc.wrapping_mul(10).wrapping_add(u64::from(d.wrapping_sub(b'0'))))
}

/// `whole` units plus `frac` e8 units, signed; `None` past 1e15. The product is done in
/// i128 only once, after the range check (a checked i128 multiply is a slow libcall).
#[inline]
fn to_e8(negative: bool, whole: u64, frac: u64) -> Option<i128> {
    const MAX_WHOLE: u64 = 1_000_000_000_000_000;
    if whole > MAX_WHOLE || (whole == MAX_WHOLE && frac != 0) {
        return None;
    }
    // Cannot overflow: at most 1e15 * 1e8 + 1e8.
    let scaled = i128::from(whole).wrapping_mul(E8) + i128::from(frac);
    Some(if negative { -scaled } else { scaled })
}

/// A JSON integer literal as a wire number, in e8 units; `None` past 1e15.
#[inline]
fn int_e8(text: &[u8]) -> Option<i128> {
    let (negative, digits) = match text.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, text),
    };
    // JSON integers have no leading zeros, so more than 16 digits is > 1e15.
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    to_e8(negative, digits_u64(digits), 0)
}

/// A decimal string `-?[0-9]+(\.[0-9]{1,8})?` (ASCII digits; leading zeros allowed) in e8
/// units; `None` if malformed or past 1e15, exactly as `money.parse_wire_e8`.
#[inline]
fn parse_decimal_e8(s: &[u8]) -> Option<i128> {
    let negative = s.first() == Some(&b'-');
    let mut i = usize::from(negative);
    let int_start = i;
    while i < s.len() && s[i] == b'0' {
        i += 1;
    }
    let significant_start = i;
    let mut whole = 0u64;
    while i < s.len() && s[i].is_ascii_digit() {
        whole = whole.wrapping_mul(10).wrapping_add(u64::from(s[i] - b'0'));
        i += 1;
    }
    // Past 16 significant digits the value is >= 1e16 (and `whole` may have wrapped).
    if i == int_start || i - significant_start > 16 {
        return None;
    }
    let mut frac = 0u64;
    if i < s.len() {
        if s[i] != b'.' {
            return None;
        }
        let frac_digits = &s[i + 1..];
        if frac_digits.is_empty() || frac_digits.len() > 8 || !frac_digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        frac = digits_u64(frac_digits) * FRACTION_SCALE[frac_digits.len()];
    }
    to_e8(negative, whole, frac)
}

#[inline]
fn id(tok: Tok<'_>) -> Option<&str> {
    match tok {
        Tok::Str(s) if !s.is_empty() => Some(s),
        _ => None,
    }
}

#[inline]
fn num(tok: Tok<'_>) -> Option<i128> {
    match tok {
        Tok::Str(s) => parse_decimal_e8(s.as_bytes()),
        Tok::Int(text) => int_e8(text),
        _ => None,
    }
}

#[inline]
fn positive(tok: Tok<'_>) -> Option<i128> {
    num(tok).filter(|&v| v > 0)
}

/// An optional fee: absent is 0.
#[inline]
fn fee(tok: Tok<'_>) -> Option<i128> {
    match tok {
        Tok::Absent => Some(0),
        _ => num(tok),
    }
}

/// `ts` is optional; present, it must be a JSON integer in int64 range.
#[inline]
fn ts_ok(tok: Tok<'_>) -> bool {
    match tok {
        Tok::Absent => true,
        Tok::Int(text) => {
            let (negative, digits) = match text.split_first() {
                Some((b'-', rest)) => (true, rest),
                _ => (false, text),
            };
            // 19 digits fit a u64; i64 allows one more on the negative side.
            digits.len() <= 19 && {
                let value = digits_u64(digits);
                value <= i64::MAX as u64 + u64::from(negative)
            }
        }
        _ => false,
    }
}

/// `Some(input)` only when Python's `decode_input(raw)` would return the equivalent
/// `Parsed*` value (same fields, same e8 integers). `None` = "not sure / not the common
/// case": the caller then runs the Python decoder, which is exact. `None` is always safe.
pub fn parse_input(raw: &[u8]) -> Option<Input<'_>> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut p = Parser { text, b: raw, i: 0 };
    let mut toks = [Tok::Absent; N_FIELDS];
    let mut seen: u32 = 0;
    let mut bids = Vec::new();
    let mut asks = Vec::new();

    p.ws();
    p.eat(b'{')?;
    p.ws();
    if p.peek()? == b'}' {
        return None; // no type
    }
    loop {
        let key = p.string()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        match field_index(key.as_bytes()) {
            Some(f) => {
                if seen & (1 << f) != 0 {
                    return None;
                }
                seen |= 1 << f;
                toks[f] = if (f == F_BIDS || f == F_ASKS) && p.peek() == Some(b'[') {
                    let start = p.i;
                    match p.levels() {
                        Some(levels) => {
                            if f == F_BIDS {
                                bids = levels;
                            } else {
                                asks = levels;
                            }
                            Tok::Levels
                        }
                        None => {
                            // Not a valid level list: fine unless this is a book.
                            p.i = start;
                            p.skip_value(1)?;
                            Tok::Other
                        }
                    }
                } else {
                    p.token()?
                };
            }
            None => p.skip_value(1)?,
        }
        p.ws();
        match p.peek()? {
            b',' => {
                p.i += 1;
                p.ws();
            }
            b'}' => {
                p.i += 1;
                break;
            }
            _ => return None,
        }
    }
    p.ws();
    if p.i != raw.len() {
        return None;
    }

    let Tok::Str(kind) = toks[F_TYPE] else {
        return None;
    };
    if !ts_ok(toks[F_TS]) {
        return None;
    }
    let t = |f: usize| toks[f];
    match kind {
        "fill" => Some(Input::Fill(FillIn {
            fill_id: id(t(F_FILL_ID))?,
            market: id(t(F_MARKET))?,
            price_e8: positive(t(F_PRICE))?,
            qty_e8: positive(t(F_QTY))?,
            buyer: id(t(F_BUYER))?,
            seller: id(t(F_SELLER))?,
            buyer_fee_e8: fee(t(F_BUYER_FEE))?,
            seller_fee_e8: fee(t(F_SELLER_FEE))?,
        })),
        "oracle" => Some(Input::Oracle { market: id(t(F_MARKET))?, price_e8: positive(t(F_PRICE))? }),
        "deposit" => Some(Input::Deposit { account: id(t(F_ACCOUNT))?, amount_e8: positive(t(F_AMOUNT))? }),
        "withdraw" => Some(Input::Withdraw { account: id(t(F_ACCOUNT))?, amount_e8: positive(t(F_AMOUNT))? }),
        "book" => {
            let side_ok = |f: usize| matches!(toks[f], Tok::Absent | Tok::Levels);
            if !side_ok(F_BIDS) || !side_ok(F_ASKS) {
                return None;
            }
            Some(Input::Book { market: id(t(F_MARKET))?, bids, asks })
        }
        "market" => {
            let imr = num(t(F_IMR))?;
            let mmr = num(t(F_MMR))?;
            let liq_fee = num(t(F_LIQ_FEE))?;
            if !(0 < mmr && mmr <= imr && imr <= E8 && (0..E8).contains(&liq_fee)) {
                return None;
            }
            let max_oracle_move_e8 = match t(F_MAX_ORACLE_MOVE) {
                Tok::Absent => None,
                tok => Some(positive(tok)?),
            };
            Some(Input::Market {
                market: id(t(F_MARKET))?,
                imr_e8: imr,
                mmr_e8: mmr,
                liq_fee_e8: liq_fee,
                max_oracle_move_e8,
            })
        }
        _ => None,
    }
}

/// How msgspec escapes the bytes `first_special` stops at: `u` = `\u00XX` (lowercase hex),
/// else the `\X` letter. All other bytes, DEL and non-ASCII UTF-8 (U+2028 too), are copied.
static ESCAPE: [u8; 128] = {
    let mut table = [0u8; 128];
    let mut c = 0;
    while c < 0x20 {
        table[c] = b'u';
        c += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Append `s` as a JSON string literal (with quotes), byte for byte as
/// `msgspec.json.Encoder` encodes a Python str.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let i = first_special(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&c) = bytes.get(i) else { break };
        match ESCAPE[usize::from(c)] {
            b'u' => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
            letter => {
                out.push(b'\\');
                out.push(letter);
            }
        }
        start = i + 1;
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests;
