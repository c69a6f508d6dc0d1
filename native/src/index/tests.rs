//! `threshold`: the last mark at which a one-position account is liquidatable.

use super::*;

/// SPEC §2 with one position, straight: E < MM, all in e24.
fn liquidatable(cash: Int, qty: Int, mmr: Int, mark: Int) -> bool {
    (cash + qty * mark) * E8 < qty.abs() * mark * mmr
}

#[test]
fn threshold_of_the_issue_example() {
    // mmr 0.05; a deposits 10 and buys 1 at 100: C = -90, so E - MM = -90 + 0.95 m and the
    // last liquidatable mark is the largest e8 price below 90 / 0.95 = 94.736842105...
    let (cash, qty, mmr) = (int(-90) * E8 * E8, E8, int(5_000_000));
    assert_eq!(threshold(cash, qty, mmr), int(94_736_842_10));
    assert!(liquidatable(cash, qty, mmr, int(94_736_842_10)));
    assert!(!liquidatable(cash, qty, mmr, int(94_736_842_11)));
}

#[test]
fn threshold_is_exactly_the_last_liquidatable_mark() {
    let cashes = [-90 * 10i128.pow(16), -1, -123_456_789_012_345_678, -7 * 10i128.pow(20), 0, 1, 5 * 10i128.pow(16)];
    let qtys = [100_000_000, 3, 12_345_678_901, -100_000_000, -7, -250_000_000, -99_999_999_999];
    let mmrs = [1, 5_000_000, 33_333_333, 99_999_999];
    for &cash in &cashes {
        for &qty in &qtys {
            for &mmr in &mmrs {
                let (cash, qty, mmr) = (int(cash), int(qty), int(mmr));
                let last = threshold(cash, qty, mmr);
                let safe = if qty > ZERO { last + int(1) } else { last - int(1) };
                assert!(liquidatable(cash, qty, mmr, last), "{cash} {qty} {mmr}: not liquidatable at {last}");
                assert!(!liquidatable(cash, qty, mmr, safe), "{cash} {qty} {mmr}: liquidatable at {safe}");
            }
        }
    }
}

#[test]
fn threshold_of_a_long_at_mmr_one_depends_on_cash_only() {
    // E - MM = C when mmr = 1: a long in debt is liquidatable at every mark, one without
    // debt at none (no positive mark is <= 0).
    assert!(threshold(int(-1), E8, E8) > int(i128::MAX));
    assert_eq!(threshold(ZERO, E8, E8), ZERO);
}
