//! Exact money for the native core: every amount is a signed 256-bit integer in fixed
//! units (e8 for wire numbers, e16 for cash and K, e24 for margin requirements), the same
//! units as `clearing/engine/money.py`. 256 bits hold every product the SPEC allows
//! (two 1e15 wire numbers at e8 make 1e46, margin terms reach 1e54); a result that would
//! not fit panics (overflow checks are on in release builds) instead of wrapping.

use ethnum::I256;

pub type Int = I256;

pub const ZERO: Int = I256::ZERO;
pub const E8: Int = I256::new(100_000_000);
pub const E16: Int = I256::new(10_000_000_000_000_000);
/// Converts an e8 amount (deposit, fee) into e16 cash units.
pub const CASH_PER_E8: Int = E8;
/// The largest wire magnitude (1e15) in e8 units: no price, and so no mark, exceeds it.
pub const MAX_WIRE_E8: i128 = 100_000_000_000_000_000_000_000;

#[inline]
pub fn int(value: i128) -> Int {
    I256::new(value)
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
    if twice > denominator || (twice == denominator && (quotient & I256::ONE) == I256::ONE) {
        quotient += I256::ONE;
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
