//! Rules version 2's arithmetic (SPEC §9), `clearing/engine/rules_v2.py` function for
//! function: volatility, fee split, funding, the step size and the rounding helpers. Pure
//! integer functions on the engine's units (ratios and prices e8, cash e16, the
//! volatility estimate e16), exact at any size: a product past 256 bits is redone in
//! arbitrary precision instead of panicking.

use num_bigint::BigInt;

use crate::ledger::MarketV2;
use crate::num::{floor_div, from_big, round_half_even_div, to_big, Int, E16, E8, ZERO};

/// `ceil8(qty * fraction)` in e8, for `qty, fraction >= 0` (both e8).
pub fn ceil8_fraction(qty: Int, fraction: Int) -> Int {
    -floor_div(-(qty * fraction), E8)
}

/// `floor16` of an e24 amount: rounded down (towards minus infinity) to e16.
pub fn floor16(value_e24: Int) -> Int {
    floor_div(value_e24, E8)
}

/// `numerator / denominator` rounded half to even, any sign; `denominator > 0`.
pub fn signed_round_half_even_div(numerator: Int, denominator: Int) -> Int {
    let magnitude = round_half_even_div(numerator.abs(), denominator);
    if numerator < ZERO {
        -magnitude
    } else {
        magnitude
    }
}

/// `floor(a * b / c)` for `c > 0`, exact at any size (the quotient must fit 256 bits).
pub fn mul_div_floor(a: Int, b: Int, c: Int) -> Int {
    match a.checked_mul(b) {
        Some(product) => floor_div(product, c),
        None => {
            let (a, b, c) = (to_big(a), to_big(b), to_big(c));
            let product = a * b;
            // BigInt's `/` truncates; floor for a negative product with a remainder.
            let mut quotient = &product / &c;
            if product < BigInt::from(0) && &quotient * &c != product {
                quotient -= 1;
            }
            from_big(&quotient)
        }
    }
}

/// `round16(v + lambda * ((p - m)^2 / m^2 - v))`, exact before the one rounding:
/// over the common denominator `1e8 * m^2`, the numerator
/// `v * 1e8 * m^2 + lambda * ((p - m)^2 * 1e16 - v * m^2)` is `>= 0` (lambda <= 1).
pub fn next_volatility(vol: Int, mark: Int, price: Int, lambda: Int) -> Int {
    let exact = || -> Option<Int> {
        let mark_sq = mark.checked_mul(mark)?;
        let move_sq = (price - mark).checked_mul(price - mark)?;
        let vol_mark_sq = vol.checked_mul(mark_sq)?;
        let old = vol_mark_sq.checked_mul(E8)?;
        let change = Int(move_sq.checked_mul(E16)?.0.checked_sub(vol_mark_sq.0)?);
        let numerator = Int(old.0.checked_add(lambda.checked_mul(change)?.0)?);
        Some(round_half_even_div(numerator, mark_sq.checked_mul(E8)?))
    };
    if let Some(value) = exact() {
        return value;
    }
    let (vol, mark, price, lambda) = (to_big(vol), to_big(mark), to_big(price), to_big(lambda));
    let (e8, e16) = (to_big(E8), to_big(E16));
    let mark_sq = &mark * &mark;
    let move_sq = (&price - &mark) * (&price - &mark);
    let numerator = &vol * &e8 * &mark_sq + &lambda * (&move_sq * &e16 - &vol * &mark_sq);
    let denominator = &e8 * &mark_sq;
    let quotient = &numerator / &denominator;
    let twice = (&numerator - &quotient * &denominator) * 2;
    let odd = (&quotient % 2) == BigInt::from(1);
    let rounded = if twice > denominator || (twice == denominator && odd) { quotient + 1 } else { quotient };
    from_big(&rounded)
}

/// The fund's share of a charged fee: the last tier with `sigma^2 <= v`, else
/// `fund_share` (sigma e8 squared is e16, like v).
pub fn fund_share(v2: &MarketV2) -> Int {
    let mut share = v2.fund_share;
    for &(sigma, tier_share) in &v2.vol_tiers {
        if sigma * sigma > v2.vol {
            break; // sigmas ascend: no later tier qualifies
        }
        share = tier_share;
    }
    share
}

/// `round16(charged * (1 - share))`: what `fee-pool` gets of a charged fee.
pub fn pool_part(charged: Int, share: Int) -> Int {
    round_half_even_div(charged * (E8 - share), E8)
}

/// `round16(q * m * rate)` (e24 product to e16, half-even; negative = receives).
pub fn funding_payment(qty: Int, mark: Int, rate: Int) -> Int {
    signed_round_half_even_div(qty * mark * rate, E8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::num::int;

    #[test]
    fn ceil8_rounds_up_to_a_whole_e8_unit() {
        assert_eq!(ceil8_fraction(int(10), int(25_000_000)), int(3)); // 2.5 units -> 3
        assert_eq!(ceil8_fraction(int(400_000_000), int(25_000_000)), int(100_000_000));
        assert_eq!(ceil8_fraction(int(1), int(1)), int(1));
        assert_eq!(ceil8_fraction(int(7), E8), int(7));
    }

    #[test]
    fn floor16_rounds_towards_minus_infinity() {
        assert_eq!(floor16(int(199_999_999)), int(1));
        assert_eq!(floor16(int(-1)), int(-1));
        assert_eq!(floor16(int(-100_000_000)), int(-1));
        assert_eq!(floor16(ZERO), ZERO);
    }

    #[test]
    fn round16_is_half_even_on_both_signs() {
        let half = int(50_000_000);
        assert_eq!(signed_round_half_even_div(half, E8), ZERO);
        assert_eq!(signed_round_half_even_div(int(150_000_000), E8), int(2));
        assert_eq!(signed_round_half_even_div(-int(150_000_000), E8), int(-2));
        assert_eq!(signed_round_half_even_div(-int(250_000_000), E8), int(-2));
        assert_eq!(signed_round_half_even_div(-int(250_000_001), E8), int(-3));
    }

    #[test]
    fn volatility_update_matches_the_exact_formula() {
        // m = 100, p = 110, lambda = 0.5, v = 0: v' = 0.5 * 0.01 = 0.005 (e16: 5e13).
        let mark = int(100 * 100_000_000);
        let price = int(110 * 100_000_000);
        assert_eq!(next_volatility(ZERO, mark, price, int(50_000_000)), int(50_000_000_000_000));
        // p = m keeps a decaying v: 0.005 * 0.5.
        assert_eq!(next_volatility(int(50_000_000_000_000), mark, mark, int(50_000_000)), int(25_000_000_000_000));
        // lambda = 1 takes the newest tick alone.
        assert_eq!(next_volatility(int(12345), mark, price, E8), int(100_000_000_000_000));
        // A third: 1/3 e16 rounds half-even at the 16th decimal.
        let third = next_volatility(ZERO, int(300_000_000), int(400_000_000), E8);
        assert_eq!(third, int(1_111_111_111_111_111));
    }

    #[test]
    fn volatility_update_past_256_bits_is_exact() {
        // A tiny mark after a huge estimate: v * 1e8 * m^2 passes 256 bits only with a
        // huge mark; take v near 1e60 and m = 1e23 (1e15 units).
        let vol: Int = "1000000000000000000000000000000000000000000000000000000000000".parse().unwrap();
        let mark = int(100_000_000_000_000_000_000_000);
        let next = next_volatility(vol, mark, mark, int(50_000_000));
        let want: Int = "500000000000000000000000000000000000000000000000000000000000".parse().unwrap();
        assert_eq!(next, want);
    }

    #[test]
    fn fund_share_takes_the_last_tier_reached() {
        let mut v2 = MarketV2 {
            fund_share: int(90_000_000),
            vol_tiers: vec![(int(1_000_000), int(50_000_000)), (int(3_000_000), ZERO)],
            ..MarketV2::default()
        };
        assert_eq!(fund_share(&v2), int(90_000_000));
        v2.vol = int(1_000_000_000_000); // sigma 0.01 squared, e16
        assert_eq!(fund_share(&v2), int(50_000_000));
        v2.vol = int(9_000_000_000_000);
        assert_eq!(fund_share(&v2), ZERO);
    }

    #[test]
    fn pool_part_and_funding_round_half_even() {
        assert_eq!(pool_part(int(3), int(50_000_000)), int(2)); // 1.5 -> 2
        assert_eq!(pool_part(int(5), int(50_000_000)), int(2)); // 2.5 -> 2
        assert_eq!(pool_part(int(5), E8), ZERO);
        // q = 1, m = 1, rate = 0.00000001: 1e8 * 1e8 * 1 = 1e16 e24 -> 1e8 e16.
        assert_eq!(funding_payment(E8, E8, int(1)), int(100_000_000));
        assert_eq!(funding_payment(-E8, E8, int(1)), int(-100_000_000));
        // 0.5 e16 rounds to 0, 1.5 to 2, -1.5 to -2.
        assert_eq!(funding_payment(int(1), int(50_000_000), int(1)), ZERO);
        assert_eq!(funding_payment(int(3), int(50_000_000), int(1)), int(2));
        assert_eq!(funding_payment(int(-3), int(50_000_000), int(1)), int(-2));
    }

    #[test]
    fn mul_div_floor_is_exact_past_256_bits() {
        let big: Int = "100000000000000000000000000000000000000000000000000".parse().unwrap();
        assert_eq!(mul_div_floor(big, big, big), big);
        assert_eq!(mul_div_floor(int(-7), int(1), int(2)), int(-4));
        assert_eq!(mul_div_floor(-big, big + Int::ONE, big), -big - Int::ONE);
    }
}
