//! Exact money for the native core: every amount is a signed 256-bit integer in fixed
//! units (e8 for wire numbers, e16 for cash and K, e24 for margin requirements), the same
//! units as `clearing/engine/money.py`. 256 bits hold every product the SPEC allows
//! (two 1e15 wire numbers at e8 make 1e46, margin terms reach 1e54); a result that would
//! not fit panics (overflow checks are on in release builds) instead of wrapping.
//!
//! `Int` wraps ethnum's I256 so multiplication and division take the machine's 128-bit
//! instructions when the operands are small, as they almost always are: a 256-bit
//! multiply or divide in software costs several times more (they were a quarter of a
//! fill's time in the profile).

use std::fmt;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};
use std::str::FromStr;

use ethnum::I256;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Int(pub I256);

impl Int {
    pub const ZERO: Int = Int(I256::ZERO);
    pub const ONE: Int = Int(I256::ONE);

    /// The value as an i128 when it fits (the common case for every amount).
    #[inline]
    fn small(self) -> Option<i128> {
        let (high, low) = self.0.into_words();
        if high == (low >> 127) {
            Some(low)
        } else {
            None
        }
    }

    /// The value as an i64 when it fits: the product of two always fits an i128.
    #[inline]
    fn word(self) -> Option<i64> {
        let value = self.small()?;
        if value >= i64::MIN as i128 && value <= i64::MAX as i128 {
            Some(value as i64)
        } else {
            None
        }
    }

    #[inline]
    pub fn abs(self) -> Int {
        Int(self.0.abs())
    }

    /// Floor-style Euclidean division (Python's `//` for a positive divisor).
    #[inline]
    pub fn div_euclid(self, rhs: Int) -> Int {
        if let (Some(a), Some(b)) = (self.small(), rhs.small()) {
            if let Some(q) = a.checked_div_euclid(b) {
                return Int(I256::new(q));
            }
        }
        Int(self.0.div_euclid(rhs.0))
    }

    #[inline]
    pub fn checked_mul(self, rhs: Int) -> Option<Int> {
        if let (Some(a), Some(b)) = (self.word(), rhs.word()) {
            return Some(Int(I256::new(a as i128 * b as i128)));
        }
        self.0.checked_mul(rhs.0).map(Int)
    }

    #[inline]
    pub fn is_odd(self) -> bool {
        (*self.0.low() & 1) == 1
    }

    #[inline]
    pub fn as_i128(self) -> i128 {
        self.0.as_i128()
    }

    #[inline]
    pub fn as_u64(self) -> u64 {
        self.0.as_u64()
    }

    #[inline]
    pub fn as_usize(self) -> usize {
        self.0.as_usize()
    }
}

impl Add for Int {
    type Output = Int;
    #[inline]
    fn add(self, rhs: Int) -> Int {
        Int(self.0 + rhs.0)
    }
}

impl Sub for Int {
    type Output = Int;
    #[inline]
    fn sub(self, rhs: Int) -> Int {
        Int(self.0 - rhs.0)
    }
}

impl Neg for Int {
    type Output = Int;
    #[inline]
    fn neg(self) -> Int {
        Int(-self.0)
    }
}

impl Mul for Int {
    type Output = Int;
    #[inline]
    fn mul(self, rhs: Int) -> Int {
        if let (Some(a), Some(b)) = (self.word(), rhs.word()) {
            return Int(I256::new(a as i128 * b as i128));
        }
        if let (Some(a), Some(b)) = (self.small(), rhs.small()) {
            if let Some(product) = a.checked_mul(b) {
                return Int(I256::new(product));
            }
        }
        Int(self.0 * rhs.0)
    }
}

impl Div for Int {
    type Output = Int;
    /// Truncating division, as I256's.
    #[inline]
    fn div(self, rhs: Int) -> Int {
        if let (Some(a), Some(b)) = (self.small(), rhs.small()) {
            if let Some(q) = a.checked_div(b) {
                return Int(I256::new(q));
            }
        }
        Int(self.0 / rhs.0)
    }
}

impl AddAssign for Int {
    #[inline]
    fn add_assign(&mut self, rhs: Int) {
        self.0 += rhs.0;
    }
}

impl SubAssign for Int {
    #[inline]
    fn sub_assign(&mut self, rhs: Int) {
        self.0 -= rhs.0;
    }
}

impl fmt::Display for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.small() {
            Some(value) => fmt::Display::fmt(&value, f),
            None => fmt::Display::fmt(&self.0, f),
        }
    }
}

impl FromStr for Int {
    type Err = std::num::ParseIntError;
    fn from_str(text: &str) -> Result<Int, Self::Err> {
        I256::from_str(text).map(Int)
    }
}
pub const ZERO: Int = Int::ZERO;
pub const E8: Int = Int(I256::new(100_000_000));
pub const E16: Int = Int(I256::new(10_000_000_000_000_000));
/// Converts an e8 amount (deposit, fee) into e16 cash units.
pub const CASH_PER_E8: Int = E8;
/// The largest wire magnitude (1e15) in e8 units: no price, and so no mark, exceeds it.
pub const MAX_WIRE_E8: i128 = 100_000_000_000_000_000_000_000;

/// The value in arbitrary precision, for the rare products past 256 bits.
pub fn to_big(value: Int) -> num_bigint::BigInt {
    value.to_string().parse().expect("decimal digits")
}

/// Back from arbitrary precision; the caller knows the value fits 256 bits.
pub fn from_big(value: &num_bigint::BigInt) -> Int {
    value.to_string().parse().expect("fits 256 bits")
}

#[inline]
pub fn int(value: i128) -> Int {
    Int(I256::new(value))
}

/// Floor division for a positive divisor (Python's `//`).
#[inline]
pub fn floor_div(numerator: Int, denominator: Int) -> Int {
    debug_assert!(denominator > ZERO);
    numerator.div_euclid(denominator)
}

/// `numerator / denominator` rounded half to even; numerator >= 0, denominator > 0.
pub fn round_half_even_div(numerator: Int, denominator: Int) -> Int {
    let mut quotient = numerator / denominator;
    let remainder = numerator - quotient * denominator;
    let twice = remainder * int(2);
    if twice > denominator || (twice == denominator && quotient.is_odd()) {
        quotient += Int::ONE;
    }
    quotient
}

/// An index key's mark: marks are wire prices in [1, MAX_WIRE_E8], so any bound outside
/// [-1, MAX_WIRE_E8 + 1] compares with every possible mark the way that end does. The
/// clamp lets the sorted index hold 128-bit keys instead of 256-bit ones.
#[inline]
pub fn clamp_mark(value: Int) -> i128 {
    if value < int(-1) {
        -1
    } else if value > int(MAX_WIRE_E8 + 1) {
        MAX_WIRE_E8 + 1
    } else {
        value.as_i128()
    }
}

/// Plain decimal notation of a scaled integer, no trailing zeros (`"30.6"`, `"0"`).
pub fn write_scaled(out: &mut Vec<u8>, value: Int, places: usize, scale: Int) {
    if value < ZERO {
        out.push(b'-');
    }
    let magnitude = value.abs();
    let whole = magnitude / scale;
    let frac = magnitude - whole * scale;
    write_digits(out, whole);
    if frac != ZERO {
        let digits = frac.to_string();
        out.push(b'.');
        for _ in digits.len()..places {
            out.push(b'0');
        }
        out.extend_from_slice(digits.trim_end_matches('0').as_bytes());
    }
}

#[inline]
fn write_digits(out: &mut Vec<u8>, value: Int) {
    if value <= int(u64::MAX as i128) {
        out.extend_from_slice(&itoa_u64(value.as_u64()));
    } else {
        out.extend_from_slice(value.to_string().as_bytes());
    }
}

fn itoa_u64(mut value: u64) -> Vec<u8> {
    let mut digits = Vec::with_capacity(20);
    loop {
        digits.push(b'0' + (value % 10) as u8);
        value /= 10;
        if value == 0 {
            break;
        }
    }
    digits.reverse();
    digits
}

pub fn write_e8(out: &mut Vec<u8>, value: Int) {
    write_scaled(out, value, 8, E8)
}

pub fn write_e16(out: &mut Vec<u8>, value: Int) {
    write_scaled(out, value, 16, E16)
}

#[cfg(test)]
pub fn format_e8(value: Int) -> String {
    let mut out = Vec::new();
    write_e8(&mut out, value);
    String::from_utf8(out).expect("digits are ASCII")
}

#[cfg(test)]
pub fn format_e16(value: Int) -> String {
    let mut out = Vec::new();
    write_e16(&mut out, value);
    String::from_utf8(out).expect("digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_python() {
        assert_eq!(format_e8(int(3_060_000_000)), "30.6");
        assert_eq!(format_e8(ZERO), "0");
        assert_eq!(format_e8(int(-1)), "-0.00000001");
        assert_eq!(format_e16(int(-15_000_000_000_000_000)), "-1.5");
        assert_eq!(format_e8(int(MAX_WIRE_E8)), "1000000000000000");
        let huge = int(MAX_WIRE_E8) * int(MAX_WIRE_E8);
        assert_eq!(format_e16(huge), "1000000000000000000000000000000");
    }

    #[test]
    fn rounds_half_even() {
        assert_eq!(round_half_even_div(int(5), int(10)), ZERO);
        assert_eq!(round_half_even_div(int(15), int(10)), int(2));
        assert_eq!(round_half_even_div(int(25), int(10)), int(2));
        assert_eq!(round_half_even_div(int(26), int(10)), int(3));
    }

    #[test]
    fn floors_negative_numerators() {
        assert_eq!(floor_div(int(-7), int(2)), int(-4));
        assert_eq!(floor_div(int(7), int(2)), int(3));
    }
}
