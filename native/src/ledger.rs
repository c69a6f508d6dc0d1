//! Ledger state: accounts, positions and markets, the same model as
//! `clearing/engine/state.py`, with accounts and markets named by small integer handles.
//! The liquidation index over this state is in `index.rs`, the order book in `book.rs`.

use std::collections::BTreeMap;

use compact_str::CompactString;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

pub use crate::book::OrderBook;
use crate::index::{key_handle, mark_floor, market_bit, may_be_in, Bands, Threshold};
use crate::keys::Keys;
use crate::num::{clamp_mark, Int, E8, ZERO};

pub const INSURANCE_FUND: &str = "insurance-fund";
pub const FEE_POOL: &str = "fee-pool";
pub const BAD_DEBT: &str = "bad-debt";
pub const FUND: u32 = 0;
pub const FEES: u32 = 1;
pub const DEBT: u32 = 2;

/// How a failed `assert_balanced` panic message starts (lib.rs maps it to
/// `InvariantViolation`).
pub const INVARIANT_PANIC: &str = "ledger invariant violated";

pub fn is_system_id(id: &str) -> bool {
    id == INSURANCE_FUND || id == FEE_POOL || id == BAD_DEBT
}

/// A signed base quantity (e8) and K (e16), the cash flow of its fills since last flat.
pub struct Position {
    pub market: u32,
    pub qty: Int,
    pub k: Int,
}

#[inline]
pub fn hash_id(id: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(id)
}

/// One account. Laid out for a million of them: the index entry is three plain fields
/// rather than an Option of a struct, and bands live behind a pointer.
pub struct Account {
    pub cash: Int,
    /// The index key of a one-position account (valid when `threshold_side` != 0).
    pub(crate) threshold_key: i128,
    /// Short ids (up to 24 bytes) are stored inline: no heap block per account.
    pub id: CompactString,
    /// Inline room for one position, the common case: no heap block for it either.
    pub positions: SmallVec<[Position; 1]>,
    /// Only accounts holding two or more markets have bands; boxed so the others pay 8 bytes.
    pub bands: Option<Box<Bands>>,
    /// Bit m set iff the account holds a position in market m < 64: most fills open a
    /// market the account does not hold, and this says so without scanning them.
    pub(crate) held: u64,
    pub(crate) threshold_market: u32,
    /// 0: in no threshold list; 1: in its market's long list; 2: in the short list.
    pub(crate) threshold_side: u8,
    pub is_system: bool,
}

impl Account {
    #[inline]
    pub fn threshold(&self) -> Option<Threshold> {
        match self.threshold_side {
            0 => None,
            side => Some(Threshold { market: self.threshold_market, is_long: side == 1, key: self.threshold_key }),
        }
    }

    #[inline]
    pub(crate) fn store_threshold(&mut self, threshold: Option<Threshold>) {
        match threshold {
            None => self.threshold_side = 0,
            Some(t) => {
                self.threshold_side = if t.is_long { 1 } else { 2 };
                self.threshold_market = t.market;
                self.threshold_key = t.key;
            }
        }
    }

    /// Open a position (the caller keeps holders exact).
    #[inline]
    pub fn push_position(&mut self, position: Position) {
        self.held |= market_bit(position.market);
        self.positions.push(position);
    }

    /// Close the position at `at` (the caller keeps holders exact).
    #[inline]
    pub fn remove_position(&mut self, at: usize) {
        let position = self.positions.swap_remove(at);
        self.held &= !market_bit(position.market);
    }

    /// Where the position in `market` is, if the account holds one.
    #[inline]
    pub fn position_at(&self, market: u32) -> Option<usize> {
        if !may_be_in(self.held, market) {
            return None;
        }
        self.positions.iter().position(|p| p.market == market)
    }

    #[inline]
    pub fn position(&self, market: u32) -> Option<&Position> {
        self.position_at(market).map(|at| &self.positions[at])
    }
}

pub struct Market {
    pub id: Box<str>,
    pub imr: Int,
    pub mmr: Int,
    pub liq_fee: Int,
    pub max_move: Option<Int>,
    pub mark: Option<Int>,
    pub oracle_seen: bool,
    pub held: Option<Int>,
    pub book: OrderBook,
    pub holders: FxHashSet<u32>,
    /// One-position accounts: a long is liquidatable iff mark <= key, a short iff mark >= key.
    pub long_thresholds: Keys,
    pub short_thresholds: Keys,
    /// Multi-market accounts' edges: a long's floor is crossed iff mark < edge, a short's
    /// ceiling iff mark > edge.
    pub band_low: Keys,
    pub band_high: Keys,
    /// The running sum of every account's quantity here (0 after every input, SPEC §2).
    pub qty_sum: Int,
    /// The running sum of the long positions' quantities (the open interest the read
    /// API shows, in O(1)).
    pub long_oi: Int,
    /// Rules version 2's parameters and volatility estimate (SPEC §9); a version-1 ledger
    /// keeps the defaults and never reads them.
    pub v2: MarketV2,
}

/// SPEC §9's market fields (e8 ratios) and the volatility estimate (a variance per tick,
/// e16), as `clearing/engine/state.py`'s MarketState holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarketV2 {
    pub liq_step: Int,
    pub adl: bool,
    pub fund_share: Int,
    /// (sigma e8, share e8), sigma strictly ascending.
    pub vol_tiers: Vec<(Int, Int)>,
    pub vol_lambda: Int,
    pub vol: Int,
}

/// Version 2's defaults: whole close-outs, clawbacks, whole fees to the fund, no tiers,
/// lambda 0.05 (`state.DEFAULT_*`).
pub const DEFAULT_VOL_LAMBDA_E8: i128 = 5_000_000;

impl Default for MarketV2 {
    fn default() -> Self {
        MarketV2 {
            liq_step: E8,
            adl: false,
            fund_share: E8,
            vol_tiers: Vec::new(),
            vol_lambda: crate::num::int(DEFAULT_VOL_LAMBDA_E8),
            vol: ZERO,
        }
    }
}

impl Market {
    pub fn new(id: &str, imr: Int, mmr: Int, liq_fee: Int, max_move: Option<Int>) -> Self {
        Market {
            id: id.into(),
            imr,
            mmr,
            liq_fee,
            max_move,
            mark: None,
            oracle_seen: false,
            held: None,
            book: OrderBook { bids: BTreeMap::new(), asks: BTreeMap::new() },
            holders: FxHashSet::default(),
            long_thresholds: Keys::new(),
            short_thresholds: Keys::new(),
            band_low: Keys::new(),
            band_high: Keys::new(),
            qty_sum: ZERO,
            long_oi: ZERO,
            v2: MarketV2::default(),
        }
    }

    #[inline]
    pub fn mark(&self) -> Int {
        self.mark.expect("a held position implies a mark")
    }

    /// (one-position accounts now liquidatable, multi-market accounts whose edge here the
    /// mark crossed), without a scan of the holders.
    pub fn liquidation_candidates(&self, mark: Int) -> (Vec<u32>, Vec<u32>) {
        let mark = clamp_mark(mark);
        let mut liquidatable: Vec<u32> =
            self.long_thresholds.range_from(mark_floor(mark)).map(|&k| key_handle(k)).collect();
        liquidatable.extend(self.short_thresholds.range_below(mark_floor(mark + 1)).map(|&k| key_handle(k)));
        let mut crossed: Vec<u32> = self.band_low.range_from(mark_floor(mark + 1)).map(|&k| key_handle(k)).collect();
        crossed.extend(self.band_high.range_below(mark_floor(mark)).map(|&k| key_handle(k)));
        crossed.sort_unstable();
        crossed.dedup();
        (liquidatable, crossed)
    }
}

pub struct Ledger {
    pub accounts: Vec<Account>,
    /// Account handles by id; the ids themselves live once, in `accounts`.
    pub account_ids: hashbrown::HashTable<u32>,
    pub markets: Vec<Market>,
    pub market_ids: FxHashMap<Box<str>, u32>,
    /// Applied fill ids; short ones inline (no heap block per fill).
    pub fill_ids: FxHashSet<CompactString>,
    pub net_deposits: Int,
    /// Running totals for `assert_balanced`: the cash of all accounts, and how many
    /// markets' quantities do not sum to 0.
    pub cash_sum: Int,
    pub unbalanced_markets: u32,
}

impl Ledger {
    pub fn new() -> Self {
        let mut ledger = Ledger {
            accounts: Vec::new(),
            account_ids: hashbrown::HashTable::new(),
            markets: Vec::new(),
            market_ids: FxHashMap::default(),
            fill_ids: FxHashSet::default(),
            net_deposits: ZERO,
            cash_sum: ZERO,
            unbalanced_markets: 0,
        };
        ledger.account(INSURANCE_FUND);
        ledger.account(FEE_POOL);
        ledger.account(BAD_DEBT);
        ledger
    }

    /// The handle of the account with this id, created on first use.
    pub fn account(&mut self, id: &str) -> u32 {
        let hash = hash_id(id);
        let accounts = &self.accounts;
        if let Some(&handle) = self.account_ids.find(hash, |&h| &*accounts[h as usize].id == id) {
            return handle;
        }
        let handle = u32::try_from(self.accounts.len()).expect("at most 2^32 accounts");
        self.accounts.push(Account {
            cash: ZERO,
            threshold_key: 0,
            id: id.into(),
            positions: SmallVec::new(),
            bands: None,
            held: 0,
            threshold_market: 0,
            threshold_side: 0,
            is_system: is_system_id(id),
        });
        let accounts = &self.accounts;
        self.account_ids.insert_unique(hash, handle, |&h| hash_id(&accounts[h as usize].id));
        handle
    }

    /// Room for `additional` more accounts without growing the tables.
    pub fn reserve_accounts(&mut self, additional: usize) {
        self.accounts.reserve_exact(additional);
        let accounts = &self.accounts;
        self.account_ids.reserve(additional, |&h| hash_id(&accounts[h as usize].id));
    }

    /// Start loading what a fill reads of the account (its positions and safety edges)
    /// into cache.
    #[inline]
    pub fn prefetch_account(&self, account: u32) {
        let acct = &self.accounts[account as usize];
        let positions = acct.positions.as_ptr();
        crate::keys::prefetch(positions);
        crate::keys::prefetch(positions.wrapping_add(acct.positions.len()));
        if let Some(bands) = &acct.bands {
            crate::keys::prefetch(&**bands as *const Bands);
        }
    }

    /// The handle of an existing account.
    pub fn account_handle(&self, id: &str) -> Option<u32> {
        let accounts = &self.accounts;
        self.account_ids.find(hash_id(id), |&h| &*accounts[h as usize].id == id).copied()
    }

    pub fn market_index(&self, id: &str) -> Option<u32> {
        self.market_ids.get(id).copied()
    }

    /// Change an account's cash, keeping the running total of all cash.
    #[inline]
    pub fn move_cash(&mut self, account: u32, delta: Int) {
        self.accounts[account as usize].cash += delta;
        self.cash_sum += delta;
    }

    /// Note a position's change from `old` to `new` in the market's running sums.
    #[inline]
    pub fn move_qty(&mut self, market: u32, old: Int, new: Int) {
        let market = &mut self.markets[market as usize];
        let was_balanced = market.qty_sum == ZERO;
        market.qty_sum += new - old;
        market.long_oi += new.max(ZERO) - old.max(ZERO);
        match (was_balanced, market.qty_sum == ZERO) {
            (true, false) => self.unbalanced_markets += 1,
            (false, true) => self.unbalanced_markets -= 1,
            _ => {}
        }
    }

    /// Both SPEC invariants from the running totals, in O(1): asserted after every input
    /// (as TigerBeetle asserts in the code path). A failure is a bug, never an input
    /// problem: it panics with `INVARIANT_PANIC`, which the Python boundary raises as
    /// `InvariantViolation`. `check_invariants` is the deep O(accounts) check.
    #[inline]
    pub fn assert_balanced(&self) {
        if self.cash_sum != self.net_deposits || self.unbalanced_markets != 0 {
            self.imbalance_panic();
        }
    }

    #[cold]
    #[inline(never)]
    fn imbalance_panic(&self) -> ! {
        if self.cash_sum != self.net_deposits {
            panic!(
                "{INVARIANT_PANIC}: cash sums to {} e-16 but deposits minus withdrawals are {} e-16",
                self.cash_sum, self.net_deposits
            );
        }
        let unbalanced: Vec<&str> = self.markets.iter().filter(|m| m.qty_sum != ZERO).map(|m| &*m.id).collect();
        panic!("{INVARIANT_PANIC}: positions in {} do not sum to 0", unbalanced.join(", "));
    }

    /// Rebuild the running totals from scratch (after loading a snapshot).
    pub fn recount(&mut self) {
        self.cash_sum = self.accounts.iter().fold(ZERO, |sum, acct| sum + acct.cash);
        for market in &mut self.markets {
            market.qty_sum = ZERO;
            market.long_oi = ZERO;
        }
        for acct in &self.accounts {
            for p in &acct.positions {
                let market = &mut self.markets[p.market as usize];
                market.qty_sum += p.qty;
                market.long_oi += p.qty.max(ZERO);
            }
        }
        self.unbalanced_markets = self.markets.iter().filter(|m| m.qty_sum != ZERO).count() as u32;
    }

    /// Set a position, keeping the market's holders exact (not the index).
    pub fn set_position(&mut self, account: u32, market: u32, qty: Int, k: Int) {
        let old = self.accounts[account as usize].position(market).map_or(ZERO, |p| p.qty);
        self.move_qty(market, old, qty);
        let acct = &mut self.accounts[account as usize];
        let found = acct.position_at(market);
        if qty == ZERO {
            if let Some(at) = found {
                acct.remove_position(at);
                self.markets[market as usize].holders.remove(&account);
            }
            return;
        }
        match found {
            Some(at) => {
                acct.positions[at].qty = qty;
                acct.positions[at].k = k;
            }
            None => {
                acct.push_position(Position { market, qty, k });
                self.markets[market as usize].holders.insert(account);
            }
        }
    }

    pub fn equity(&self, account: u32) -> Int {
        let acct = &self.accounts[account as usize];
        let mut equity = acct.cash;
        for p in &acct.positions {
            equity += p.qty * self.markets[p.market as usize].mark();
        }
        equity
    }

    pub fn initial_requirement(&self, account: u32) -> Int {
        let mut total = ZERO;
        for p in &self.accounts[account as usize].positions {
            let market = &self.markets[p.market as usize];
            total += p.qty.abs() * market.mark() * market.imr;
        }
        total
    }

    /// (E e16, MM e24) in one pass over the positions.
    pub fn equity_and_maintenance(&self, account: u32) -> (Int, Int) {
        let acct = &self.accounts[account as usize];
        let mut equity = acct.cash;
        let mut maintenance = ZERO;
        for p in &acct.positions {
            let market = &self.markets[p.market as usize];
            let mark = market.mark();
            equity += p.qty * mark;
            maintenance += p.qty.abs() * mark * market.mmr;
        }
        (equity, maintenance)
    }

    /// MM = sum(|q| * m * mmr), e24.
    pub fn maintenance_requirement(&self, account: u32) -> Int {
        let mut total = ZERO;
        for p in &self.accounts[account as usize].positions {
            let market = &self.markets[p.market as usize];
            total += p.qty.abs() * market.mark() * market.mmr;
        }
        total
    }

    /// (E * 1e8, MM) at e24 if the account is liquidatable (holds a position, E < MM).
    pub fn liquidation_key(&self, account: u32) -> Option<(Int, Int)> {
        let acct = &self.accounts[account as usize];
        if acct.is_system || acct.positions.is_empty() {
            return None;
        }
        let mut equity = ZERO;
        let mut maintenance = ZERO;
        for p in &acct.positions {
            let market = &self.markets[p.market as usize];
            let mark = market.mark();
            equity += p.qty * mark;
            maintenance += p.qty.abs() * mark * market.mmr;
        }
        let equity = (equity + acct.cash) * E8;
        if equity < maintenance {
            Some((equity, maintenance))
        } else {
            None
        }
    }

    /// A clawback's payers: each non-system holder other than `account` with a profit
    /// `q*m + K > 0` in one of `markets`, as `each(holder, market, profit)` (e16), market
    /// by market in the order given.
    pub fn for_each_profit(&self, account: u32, markets: &[u32], mut each: impl FnMut(u32, u32, Int)) {
        for &market in markets {
            let mkt = &self.markets[market as usize];
            let mark = mkt.mark();
            for &holder in &mkt.holders {
                let acct = &self.accounts[holder as usize];
                if acct.is_system || holder == account {
                    continue;
                }
                let position = acct.position(market).unwrap();
                let profit = position.qty * mark + position.k;
                if profit > ZERO {
                    each(holder, market, profit);
                }
            }
        }
    }
}

impl Ledger {
    /// Both SPEC invariants and the holders map; Err names what is wrong.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.invariants_hold() {
            return Ok(());
        }
        self.check_invariants_exact()
    }

    /// True only if `check_invariants_exact` finds nothing, in one pass over the
    /// positions: instead of finding each holder's position (a random access and a scan
    /// per holder), the pass marks who holds what in one bit per account and market.
    fn invariants_hold(&self) -> bool {
        let accounts = self.accounts.len();
        if self.markets.len().saturating_mul(accounts) > 1 << 30 {
            return false; // a bit set over 128 MiB: let the exact check do it
        }
        let mut cash = ZERO;
        let mut qty_by_market = vec![ZERO; self.markets.len()];
        let mut long_by_market = vec![ZERO; self.markets.len()];
        let mut holds = Bits::new(self.markets.len() * accounts);
        for (handle, acct) in self.accounts.iter().enumerate() {
            cash += acct.cash;
            for p in &acct.positions {
                qty_by_market[p.market as usize] += p.qty;
                long_by_market[p.market as usize] += p.qty.max(ZERO);
                holds.set(p.market as usize * accounts + handle);
            }
        }
        cash == self.net_deposits
            && cash == self.cash_sum
            && self.unbalanced_markets == 0
            && self.markets.iter().enumerate().all(|(index, market)| {
                let base = index * accounts;
                qty_by_market[index] == ZERO
                    && market.qty_sum == ZERO
                    && market.long_oi == long_by_market[index]
                    && market.holders.iter().all(|&h| (h as usize) < accounts && holds.get(base + h as usize))
            })
    }

    /// `check_invariants` one lookup at a time: the reference, and the message.
    fn check_invariants_exact(&self) -> Result<(), String> {
        let mut cash = ZERO;
        let mut qty_by_market = vec![ZERO; self.markets.len()];
        let mut long_by_market = vec![ZERO; self.markets.len()];
        for acct in &self.accounts {
            cash += acct.cash;
            for p in &acct.positions {
                qty_by_market[p.market as usize] += p.qty;
                long_by_market[p.market as usize] += p.qty.max(ZERO);
            }
        }
        if cash != self.net_deposits {
            return Err(format!(
                "cash sums to {cash} e-16 but deposits minus withdrawals are {} e-16",
                self.net_deposits
            ));
        }
        for (index, total) in qty_by_market.iter().enumerate() {
            let market = &self.markets[index];
            if *total != ZERO {
                return Err(format!("positions in {} sum to {total} e-8, not 0", market.id));
            }
            for &holder in &market.holders {
                if self.accounts[holder as usize].position(index as u32).is_none() {
                    return Err(format!("holder index of {} is stale", market.id));
                }
            }
        }
        // The running totals `assert_balanced` reads must be the real sums.
        if cash != self.cash_sum {
            return Err(format!("running cash total {} e-16 is stale", self.cash_sum));
        }
        if self.unbalanced_markets != 0 || self.markets.iter().any(|m| m.qty_sum != ZERO) {
            return Err("running quantity sums are stale".to_string());
        }
        if let Some(market) = self.markets.iter().zip(&long_by_market).find(|(m, long)| m.long_oi != **long) {
            return Err(format!("running open interest of {} is stale", market.0.id));
        }
        Ok(())
    }
}

/// A fixed-size bit set, for the checks' passes.
pub(crate) struct Bits(Vec<u64>);

impl Bits {
    pub(crate) fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    #[inline]
    pub(crate) fn set(&mut self, at: usize) {
        self.0[at / 64] |= 1 << (at % 64);
    }

    #[inline]
    pub(crate) fn get(&self, at: usize) -> bool {
        self.0[at / 64] & (1 << (at % 64)) != 0
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
