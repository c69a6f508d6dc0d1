//! The fast invariant and index checks against their exact references.

use super::*;
use crate::engine::Engine;
use crate::json_in::parse_input;
use crate::num::int;

/// A ledger of multi-market and one-position accounts (fills at moving prices).
fn venue() -> Engine {
    let mut engine = Engine::new();
    let mut apply = |raw: String| {
        engine.seq += 1;
        let input = parse_input(raw.as_bytes()).expect("a plain input");
        let mut out = Vec::new();
        let _ = engine.apply(&input, &mut out);
    };
    for m in 0..3 {
        apply(format!(r#"{{"type":"market","market":"M{m}","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}}"#));
        apply(format!(r#"{{"type":"oracle","market":"M{m}","price":"100"}}"#));
    }
    for a in 0..40 {
        apply(format!(r#"{{"type":"deposit","account":"a{a}","amount":"{}"}}"#, 1000 + a * 37));
    }
    for f in 0..150 {
        let (buyer, seller, market) = ((f * 7) % 40, (f * 11 + 3) % 40, (f * 5) % 3);
        if buyer == seller {
            continue;
        }
        let price = 95 + (f * 13) % 11;
        apply(format!(
            r#"{{"type":"fill","fill_id":"f{f}","market":"M{market}","price":"{price}","qty":"1.5","buyer":"a{buyer}","seller":"a{seller}"}}"#
        ));
    }
    engine
}

fn same_verdicts(ledger: &Ledger) -> (Result<(), String>, Result<(), String>) {
    assert_eq!(ledger.check_invariants(), ledger.check_invariants_exact());
    assert_eq!(ledger.check_index(), ledger.check_index_exact());
    (ledger.check_invariants(), ledger.check_index())
}

#[test]
fn fast_checks_give_the_exact_verdicts() {
    let engine = venue();
    let ledger = &engine.ledger;
    assert_eq!(same_verdicts(ledger), (Ok(()), Ok(())));
    let singles = ledger.accounts.iter().filter(|a| !a.is_system && a.positions.len() == 1).count();
    let multis = ledger.accounts.iter().filter(|a| a.positions.len() > 1).count();
    assert!(singles > 0 && multis > 0, "{singles} {multis}");

    // Every index entry missing in turn, and a stray one added.
    for m in 0..ledger.markets.len() {
        for list in 0..4 {
            let keys: Vec<i128> = {
                let market = &ledger.markets[m];
                [&market.long_thresholds, &market.short_thresholds, &market.band_low, &market.band_high][list]
                    .iter()
                    .copied()
                    .collect()
            };
            for key in keys.iter().copied().take(5).chain([i128::MAX >> 1]) {
                let mut broken = venue();
                let market = &mut broken.ledger.markets[m];
                let set = [
                    &mut market.long_thresholds,
                    &mut market.short_thresholds,
                    &mut market.band_low,
                    &mut market.band_high,
                ];
                let set = set.into_iter().nth(list).unwrap();
                if !set.remove(&key) {
                    set.insert(key);
                }
                let (_, index) = same_verdicts(&broken.ledger);
                assert!(index.is_err());
            }
        }
    }

    // A stale holder, and a position the holders do not know of.
    let mut broken = venue();
    let lone = (3..broken.ledger.accounts.len() as u32)
        .find(|&h| broken.ledger.accounts[h as usize].positions.is_empty())
        .expect("an account without positions");
    broken.ledger.markets[1].holders.insert(lone);
    let (invariants, _) = same_verdicts(&broken.ledger);
    assert!(invariants.unwrap_err().contains("is stale"));
    let mut broken = venue();
    let holder = *broken.ledger.markets[0].holders.iter().next().unwrap();
    broken.ledger.markets[0].holders.remove(&holder);
    let _ = same_verdicts(&broken.ledger);

    // Money from nowhere, and a stale threshold entry.
    let mut broken = venue();
    broken.ledger.accounts[5].cash += int(1);
    let (invariants, _) = same_verdicts(&broken.ledger);
    assert!(invariants.is_err());
}

#[test]
fn running_totals_follow_transfers_and_positions() {
    let mut ledger = Ledger::new();
    let a = ledger.account("a");
    ledger.markets.push(Market::new("M", int(10_000_000), int(5_000_000), ZERO, None));
    ledger.move_cash(a, int(-7));
    ledger.move_cash(FUND, int(7));
    ledger.set_position(a, 0, int(3), ZERO);
    assert_eq!(ledger.unbalanced_markets, 1);
    ledger.set_position(FUND, 0, int(-3), ZERO);
    ledger.assert_balanced();
    assert_eq!(ledger.check_invariants(), Ok(()));
}

#[test]
#[should_panic(expected = "ledger invariant violated: cash sums to 5 e-16")]
fn cash_from_nowhere_fails_the_running_check() {
    let mut ledger = Ledger::new();
    let a = ledger.account("a");
    ledger.move_cash(a, int(5));
    ledger.assert_balanced();
}

#[test]
#[should_panic(expected = "ledger invariant violated: positions in M do not sum to 0")]
fn a_one_sided_position_fails_the_running_check() {
    let mut ledger = Ledger::new();
    let a = ledger.account("a");
    ledger.markets.push(Market::new("M", int(10_000_000), int(5_000_000), ZERO, None));
    ledger.set_position(a, 0, int(3), ZERO);
    ledger.assert_balanced();
}
