//! SPEC §9.5's payments and the index upkeep they need (`Engine::funding` emits the
//! event and re-examines the accounts returned here).

use crate::index::{index_key, threshold, Threshold};
use crate::ledger::Ledger;
use crate::num::{Int, ZERO};
use crate::rules_v2::funding_payment;

/// Below this many holders the index is kept one account at a time.
const BULK_HOLDERS: usize = 4096;

impl Ledger {
    /// Every holder of `market` pays `round16(q * m * rate)` (the fee pool's share is the
    /// caller's); returns (the sum of the positive payments, their net sum, the accounts
    /// whose cash changed and that the index cannot prove safe, to re-examine).
    ///
    /// A market held by most of the ledger moves a million thresholds at once: then one
    /// pass over the accounts in memory order pays and re-keys every one-position holder,
    /// and the market's two threshold lists are rebuilt in one sorted bulk load (instead
    /// of a removal and an insertion each). Same index, same accounts re-examined.
    pub fn pay_funding(&mut self, market: u32, mark: Int, rate: Int) -> (Int, Int, Vec<u32>) {
        let holders = self.markets[market as usize].holders.len();
        if holders < BULK_HOLDERS || holders * 4 < self.accounts.len() {
            return self.pay_funding_each(market, mark, rate);
        }
        let mmr = self.markets[market as usize].mmr;
        let mut longs: Vec<i128> = Vec::with_capacity(self.markets[market as usize].long_thresholds.len());
        let mut shorts: Vec<i128> = Vec::with_capacity(self.markets[market as usize].short_thresholds.len());
        let (mut paid, mut net) = (ZERO, ZERO);
        let mut unsafe_ = Vec::new();
        let mut multi = Vec::new();
        for (handle, acct) in self.accounts.iter_mut().enumerate() {
            let Some(at) = acct.position_at(market) else { continue };
            let qty = acct.positions[at].qty;
            let payment = funding_payment(qty, mark, rate);
            if payment != ZERO {
                acct.cash -= payment;
                net += payment;
                paid += payment.max(ZERO);
            }
            let handle = handle as u32;
            if acct.is_system {
                continue; // never indexed
            }
            if acct.positions.len() > 1 {
                if payment != ZERO {
                    multi.push(handle);
                }
                continue;
            }
            // index_single's threshold, gathered for the bulk load.
            let bound = threshold(acct.cash, qty, mmr);
            let is_long = qty > ZERO;
            let key = index_key(bound, handle);
            acct.store_threshold(Some(Threshold { market, is_long, key }));
            if is_long {
                longs.push(key);
            } else {
                shorts.push(key);
            }
            let safe = if is_long { mark > bound } else { mark < bound };
            if payment != ZERO && !safe {
                unsafe_.push(handle);
            }
        }
        // The holders' cash moved by -net in total; the caller moves +net to the pool.
        self.cash_sum -= net;
        let mkt = &mut self.markets[market as usize];
        mkt.long_thresholds = longs.into_iter().collect();
        mkt.short_thresholds = shorts.into_iter().collect();
        for handle in multi {
            if !self.reindex_cash(handle) {
                unsafe_.push(handle);
            }
        }
        (paid, net, unsafe_)
    }

    /// `pay_funding` one holder at a time (`Engine._funding` in Python).
    fn pay_funding_each(&mut self, market: u32, mark: Int, rate: Int) -> (Int, Int, Vec<u32>) {
        let (mut paid, mut net) = (ZERO, ZERO);
        let mut changed: Vec<u32> = Vec::new();
        let mkt = &self.markets[market as usize];
        for &holder in &mkt.holders {
            let acct = &mut self.accounts[holder as usize];
            let qty = acct.position(market).expect("a holder holds the market").qty;
            let payment = funding_payment(qty, mark, rate);
            if payment != ZERO {
                acct.cash -= payment;
                net += payment;
                paid += payment.max(ZERO);
                changed.push(holder);
            }
        }
        self.cash_sum -= net;
        let unsafe_ = changed.into_iter().filter(|&h| !self.reindex_cash(h)).collect();
        (paid, net, unsafe_)
    }
}
