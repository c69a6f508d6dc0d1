//! Ledger state and the liquidation index: the same model and the same index rules as
//! `clearing/engine/state.py` (read that file's docstrings for the why), with accounts and
//! markets named by small integer handles and the sorted lists as chunked sorted sets
//! (`keys.rs`).

use std::collections::BTreeMap;

use compact_str::CompactString;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::num::{clamp_mark, floor_div, from_big, int, to_big, Int, E8, ZERO};

pub const INSURANCE_FUND: &str = "insurance-fund";
pub const FEE_POOL: &str = "fee-pool";
pub const BAD_DEBT: &str = "bad-debt";
pub const FUND: u32 = 0;
pub const FEES: u32 = 1;
pub const DEBT: u32 = 2;

pub fn is_system_id(id: &str) -> bool {
    id == INSURANCE_FUND || id == FEE_POOL || id == BAD_DEBT
}

/// A signed base quantity (e8) and K (e16), the cash flow of its fills since last flat.
pub struct Position {
    pub market: u32,
    pub qty: Int,
    pub k: Int,
}

/// A safety edge of a multi-market account in one market (see `Ledger::refresh_bands`).
#[derive(Clone)]
pub struct Band {
    pub market: u32,
    pub is_long: bool,
    pub edge: Int,
    /// The buffer term `q * edge * (1 -/+ mmr)` at the edge, e24.
    pub term: Int,
}

/// Where the index holds a one-position account: its market, side, and index key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub market: u32,
    pub is_long: bool,
    pub key: i128,
}

/// An index key: the (clamped) mark in the high bits, the account handle in the low 32,
/// so the sorted sets hold single 16-byte integers ordered by mark, then handle.
#[inline]
pub fn index_key(mark: Int, handle: u32) -> i128 {
    (clamp_mark(mark) << 32) | handle as i128
}

/// The first key of any account at `mark` (a clamped or in-range mark).
#[inline]
fn mark_floor(mark: i128) -> i128 {
    mark << 32
}

#[inline]
fn key_handle(key: i128) -> u32 {
    key as u32 // the low 32 bits
}

#[inline]
pub fn hash_id(id: &str) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(id)
}

pub struct Bands {
    pub edges: Vec<Band>,
    pub terms: Int,
    /// Bit m set when an edge may be in market m < 64 (see `market_bit`).
    mask: u64,
}

/// The bit of a market in an account's held-markets mask: markets 0..64 have one, the
/// rest share none (a clear bit proves "not here"; a set one, or no bit, means look).
#[inline]
fn market_bit(market: u32) -> u64 {
    if market < 64 {
        1 << market
    } else {
        0
    }
}

#[inline]
fn may_be_in(mask: u64, market: u32) -> bool {
    market >= 64 || mask & (1 << market) != 0
}

impl Bands {
    fn new(edges: Vec<Band>, terms: Int) -> Self {
        let mask = edges.iter().fold(0, |mask, band| mask | market_bit(band.market));
        Bands { edges, terms, mask }
    }

    /// Where the edge in `market` is, if there is one.
    #[inline]
    pub fn find(&self, market: u32) -> Option<usize> {
        if !may_be_in(self.mask, market) {
            return None;
        }
        self.edges.iter().position(|b| b.market == market)
    }

    fn push(&mut self, band: Band) {
        self.mask |= market_bit(band.market);
        self.edges.push(band);
    }

    fn swap_remove(&mut self, at: usize) {
        let band = self.edges.swap_remove(at);
        self.mask &= !market_bit(band.market);
    }
}

/// One account. Laid out for a million of them: the index entry is three plain fields
/// rather than an Option of a struct, and bands live behind a pointer.
pub struct Account {
    pub cash: Int,
    /// The index key of a one-position account (valid when `threshold_side` != 0).
    threshold_key: i128,
    /// Short ids (up to 24 bytes) are stored inline: no heap block per account.
    pub id: CompactString,
    /// Inline room for one position, the common case: no heap block for it either.
    pub positions: SmallVec<[Position; 1]>,
    /// Only accounts holding two or more markets have bands; boxed so the others pay 8 bytes.
    pub bands: Option<Box<Bands>>,
    /// Bit m set iff the account holds a position in market m < 64: most fills open a
    /// market the account does not hold, and this says so without scanning them.
    held: u64,
    threshold_market: u32,
    /// 0: in no threshold list; 1: in its market's long list; 2: in the short list.
    threshold_side: u8,
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
    fn store_threshold(&mut self, threshold: Option<Threshold>) {
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

pub struct OrderBook {
    /// Keyed by negated price, so the first entry is the best (highest) bid.
    pub bids: BTreeMap<Int, Int>,
    pub asks: BTreeMap<Int, Int>,
}

impl OrderBook {
    /// Signed proceeds (e16) of closing `qty` against the book; consumes the levels used.
    pub fn close_out(&mut self, qty: Int, mark: Int) -> Int {
        let (side, sign) = if qty > ZERO { (&mut self.bids, int(-1)) } else { (&mut self.asks, int(1)) };
        if side.is_empty() {
            return qty * mark;
        }
        let mut remaining = qty.abs();
        let mut notional = ZERO;
        let mut price = ZERO;
        while remaining > ZERO {
            let Some((&key, &level_qty)) = side.iter().next() else { break };
            price = key * sign;
            let taken = remaining.min(level_qty);
            notional += taken * price;
            remaining -= taken;
            if taken == level_qty {
                side.remove(&key);
            } else {
                side.insert(key, level_qty - taken);
            }
        }
        notional += remaining * price; // beyond the depth: the worst level walked
        if qty > ZERO {
            notional
        } else {
            -notional
        }
    }
}

pub use crate::keys::Keys;

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
}

/// The mark at which a one-position account becomes liquidatable (see state.threshold_e8).
pub fn threshold(cash: Int, qty: Int, mmr: Int) -> Int {
    let scaled = cash * E8;
    if qty > ZERO {
        let slope = qty * (E8 - mmr);
        if slope == ZERO {
            return if cash < ZERO { Int(ethnum::I256::new(10).pow(40)) } else { ZERO };
        }
        return -floor_div(scaled, slope) - int(1);
    }
    let slope = -qty * (E8 + mmr);
    floor_div(scaled, slope) + int(1)
}

/// A part for `edges`: (market, is_long, mark, |slope| e16, weight e24).
type Part = (u32, bool, Int, Int, Int);

fn edges(parts: &[Part], share: Int, gross: Int, out: &mut Vec<Band>) {
    for &(market, is_long, mark, slope, weight) in parts {
        if slope == ZERO {
            out.push(Band { market, is_long: true, edge: ZERO, term: ZERO });
            continue;
        }
        // share and weight are both e24 amounts: their product passes 256 bits once
        // buffers and notionals reach ~1e15 units, so fall back to arbitrary precision.
        let portion = match share.checked_mul(weight) {
            Some(product) => floor_div(product, gross),
            None => big_floor_div(share, weight, gross),
        };
        let movement = floor_div(portion, slope);
        if is_long {
            let edge = mark - movement;
            out.push(Band { market, is_long: true, edge, term: edge * slope });
        } else {
            let edge = mark + movement;
            out.push(Band { market, is_long: false, edge, term: -edge * slope });
        }
    }
}

/// floor(a * b / c) for a, b >= 0 and c > 0, exact at any size; the result is at most
/// `a` (b <= c here), so it fits.
fn big_floor_div(a: Int, b: Int, c: Int) -> Int {
    from_big(&(to_big(a) * to_big(b) / to_big(c)))
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

    /// Set a position, keeping the market's holders exact (not the index).
    pub fn set_position(&mut self, account: u32, market: u32, qty: Int, k: Int) {
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

    // -- the liquidation index ----------------------------------------------------------

    /// Refresh the account's place in the index from scratch; true when the index proves
    /// it neither liquidatable nor bankrupt at the current marks (state.Ledger.reindex).
    pub fn reindex(&mut self, account: u32) -> bool {
        let acct = &self.accounts[account as usize];
        if acct.is_system {
            return true;
        }
        let count = acct.positions.len();
        if count == 1 {
            if acct.bands.is_some() {
                self.drop_bands(account);
            }
            return self.index_single(account);
        }
        if acct.threshold_side != 0 {
            self.set_threshold(account, None);
        }
        if count == 0 {
            if self.accounts[account as usize].bands.is_some() {
                self.drop_bands(account);
            }
            return self.accounts[account as usize].cash >= ZERO;
        }
        self.refresh_bands(account)
    }

    /// `reindex` after a change to the account's cash only.
    pub fn reindex_cash(&mut self, account: u32) -> bool {
        let acct = &self.accounts[account as usize];
        match &acct.bands {
            Some(bands) if !acct.is_system => {
                if acct.cash * E8 + bands.terms >= ZERO {
                    return true;
                }
                self.refresh_bands(account)
            }
            _ => self.reindex(account),
        }
    }

    /// `reindex` after a fill changed the account's cash and its position in `market` only.
    pub fn reindex_fill(&mut self, account: u32, market: u32) -> bool {
        let acct = &self.accounts[account as usize];
        let Some(bands) = &acct.bands else { return self.reindex(account) };
        if acct.positions.len() < 2 || acct.is_system {
            return self.reindex(account);
        }
        let old_at = bands.find(market);
        let held_here = acct.position(market).is_some();
        if bands.edges.len() - old_at.is_some() as usize != acct.positions.len() - held_here as usize {
            return self.reindex(account);
        }
        let old = old_at.map(|at| bands.edges[at].clone());
        let terms = bands.terms - old.as_ref().map_or(ZERO, |b| b.term);
        let buffer = acct.cash * E8 + terms;
        let Some(position) = acct.position(market) else {
            // The fill closed this market.
            if buffer < ZERO {
                return self.refresh_bands(account);
            }
            let old = old.expect("the counts above imply an edge here");
            self.remove_band_key(account, &old);
            let bands = self.accounts[account as usize].bands.as_mut().unwrap();
            bands.swap_remove(old_at.unwrap());
            bands.terms = terms;
            return true;
        };
        let qty = position.qty;
        let is_long = qty > ZERO;
        let mkt = &self.markets[market as usize];
        let mark = mkt.mark();
        let (slope, mark_term) = if is_long {
            let slope = qty * (E8 - mkt.mmr);
            (slope, mark * slope)
        } else {
            let slope = -qty * (E8 + mkt.mmr);
            (slope, -mark * slope)
        };
        if let Some(old) = &old {
            if old.is_long == is_long {
                let edge = old.edge;
                let (edge_term, uncrossed) =
                    if is_long { (edge * slope, mark >= edge) } else { (-edge * slope, mark <= edge) };
                if uncrossed && buffer + edge_term >= ZERO {
                    let bands = self.accounts[account as usize].bands.as_mut().unwrap();
                    bands.edges[old_at.unwrap()].term = edge_term;
                    bands.terms = terms + edge_term;
                    return true;
                }
            }
        }
        let available = buffer + mark_term;
        if available < ZERO {
            return self.refresh_bands(account);
        }
        let edge = if slope == ZERO {
            ZERO
        } else {
            let movement = floor_div(floor_div(available, int(2)), slope);
            if is_long {
                mark - movement
            } else {
                mark + movement
            }
        };
        let edge_term = if is_long { edge * slope } else { -edge * slope };
        {
            // Load the new key's place while the old key is found and removed.
            let mkt = &self.markets[market as usize];
            let keys = if is_long { &mkt.band_low } else { &mkt.band_high };
            keys.prefetch(index_key(edge, account));
        }
        if let Some(old) = &old {
            self.remove_band_key(account, old);
        }
        let band = Band { market, is_long, edge, term: edge_term };
        self.add_band_key(account, &band);
        let bands = self.accounts[account as usize].bands.as_mut().unwrap();
        match old_at {
            Some(at) => bands.edges[at] = band,
            None => bands.push(band),
        }
        bands.terms = terms + edge_term;
        true
    }

    fn index_single(&mut self, account: u32) -> bool {
        let acct = &self.accounts[account as usize];
        let position = &acct.positions[0];
        let market = &self.markets[position.market as usize];
        let qty = position.qty;
        let bound = threshold(acct.cash, qty, market.mmr);
        let wanted = Threshold { market: position.market, is_long: qty > ZERO, key: index_key(bound, account) };
        let mark = market.mark();
        if acct.threshold() != Some(wanted) {
            self.set_threshold(account, Some(wanted));
        }
        if qty > ZERO {
            mark > bound
        } else {
            mark < bound
        }
    }

    fn set_threshold(&mut self, account: u32, wanted: Option<Threshold>) {
        if let Some(new) = wanted {
            // Load the new key's place while the old one is removed.
            let market = &self.markets[new.market as usize];
            let list = if new.is_long { &market.long_thresholds } else { &market.short_thresholds };
            list.prefetch(new.key);
        }
        if let Some(old) = self.accounts[account as usize].threshold() {
            let market = &mut self.markets[old.market as usize];
            let list = if old.is_long { &mut market.long_thresholds } else { &mut market.short_thresholds };
            list.remove(&old.key);
        }
        if let Some(new) = wanted {
            let market = &mut self.markets[new.market as usize];
            let list = if new.is_long { &mut market.long_thresholds } else { &mut market.short_thresholds };
            list.insert(new.key);
        }
        self.accounts[account as usize].store_threshold(wanted);
    }

    fn remove_band_key(&mut self, account: u32, band: &Band) {
        let market = &mut self.markets[band.market as usize];
        let keys = if band.is_long { &mut market.band_low } else { &mut market.band_high };
        keys.remove(&index_key(band.edge, account));
    }

    fn add_band_key(&mut self, account: u32, band: &Band) {
        let market = &mut self.markets[band.market as usize];
        let keys = if band.is_long { &mut market.band_low } else { &mut market.band_high };
        keys.insert(index_key(band.edge, account));
    }

    fn drop_bands(&mut self, account: u32) {
        if let Some(bands) = self.accounts[account as usize].bands.take() {
            for band in &bands.edges {
                self.remove_band_key(account, band);
            }
        }
    }

    /// The buffer terms at the current marks of the positions outside `skip`, their gross
    /// weight, and one part each (state.Ledger._at_marks).
    fn at_marks(&self, account: u32, skip: &[Band], parts: &mut Vec<Part>) -> (Int, Int) {
        let mut terms = ZERO;
        let mut gross = ZERO;
        for p in &self.accounts[account as usize].positions {
            if skip.iter().any(|b| b.market == p.market) {
                continue;
            }
            let market = &self.markets[p.market as usize];
            let mark = market.mark();
            let slope = if p.qty > ZERO {
                let slope = p.qty * (E8 - market.mmr);
                terms += mark * slope;
                slope
            } else {
                let slope = -p.qty * (E8 + market.mmr);
                terms -= mark * slope;
                slope
            };
            let weight = slope * mark;
            gross += weight;
            parts.push((p.market, p.qty > ZERO, mark, slope, weight));
        }
        (terms, gross)
    }

    /// Make a multi-market account's edges valid again, moving as few as possible;
    /// returns whether E >= MM (state.Ledger._refresh_bands).
    fn refresh_bands(&mut self, account: u32) -> bool {
        let old_bands = self.accounts[account as usize].bands.take();
        let old_edges: &[Band] = old_bands.as_ref().map_or(&[], |b| &b.edges);
        let acct = &self.accounts[account as usize];
        let mut terms = ZERO;
        let mut kept: Vec<Band> = Vec::with_capacity(acct.positions.len());
        for band in old_edges {
            let Some(position) = acct.position(band.market) else { continue };
            if (position.qty > ZERO) != band.is_long {
                continue;
            }
            let market = &self.markets[band.market as usize];
            let term = if band.is_long {
                if market.mark() < band.edge {
                    continue;
                }
                band.edge * position.qty * (E8 - market.mmr)
            } else {
                if market.mark() > band.edge {
                    continue;
                }
                band.edge * position.qty * (E8 + market.mmr)
            };
            kept.push(Band { term, ..band.clone() });
            terms += term;
        }
        let mut buffer = acct.cash * E8 + terms;
        let mut fresh: Vec<Part> = Vec::new();
        let mut gross = ZERO;
        if kept.len() != acct.positions.len() {
            let (mark_terms, fresh_gross) = self.at_marks(account, &kept, &mut fresh);
            buffer += mark_terms;
            gross = fresh_gross;
        }
        let mut safe = true;
        let mut bands = kept;
        if buffer >= ZERO {
            let start = bands.len();
            edges(&fresh, floor_div(buffer, int(2)), gross, &mut bands);
            for band in &bands[start..] {
                terms += band.term;
            }
        } else {
            let (fresh_bands, fresh_terms, fresh_safe) = self.safety_bands(account);
            bands = fresh_bands;
            terms = fresh_terms;
            safe = fresh_safe;
        }
        for old in old_edges {
            let same = bands.iter().any(|b| b.market == old.market && b.is_long == old.is_long && b.edge == old.edge);
            if !same {
                self.remove_band_key(account, old);
            }
        }
        for band in &bands {
            let same =
                old_edges.iter().any(|o| o.market == band.market && o.is_long == band.is_long && o.edge == band.edge);
            if !same {
                self.add_band_key(account, band);
            }
        }
        self.accounts[account as usize].bands = Some(Box::new(Bands::new(bands, terms)));
        safe
    }

    fn safety_bands(&self, account: u32) -> (Vec<Band>, Int, bool) {
        let mut parts = Vec::new();
        let (mark_terms, gross) = self.at_marks(account, &[], &mut parts);
        let buffer = self.accounts[account as usize].cash * E8 + mark_terms;
        let mut bands = Vec::with_capacity(parts.len());
        edges(&parts, floor_div(buffer.max(ZERO), int(2)), gross, &mut bands);
        let terms = bands.iter().fold(ZERO, |sum, b| sum + b.term);
        (bands, terms, buffer >= ZERO)
    }

    /// Index every account of a just-loaded ledger (empty index). One-position accounts'
    /// keys are collected and each list is built in one sorted bulk load, several times
    /// faster than a million single inserts; multi-market accounts are re-indexed after.
    pub fn build_index(&mut self) {
        let mut longs: Vec<Vec<i128>> = vec![Vec::new(); self.markets.len()];
        let mut shorts: Vec<Vec<i128>> = vec![Vec::new(); self.markets.len()];
        let mut multi = Vec::new();
        for handle in 0..self.accounts.len() as u32 {
            let acct = &self.accounts[handle as usize];
            if acct.is_system || acct.positions.is_empty() {
                continue;
            }
            if acct.positions.len() > 1 {
                multi.push(handle);
                continue;
            }
            let position = &acct.positions[0];
            let market = position.market;
            let bound = threshold(acct.cash, position.qty, self.markets[market as usize].mmr);
            let wanted = Threshold { market, is_long: position.qty > ZERO, key: index_key(bound, handle) };
            let list = if wanted.is_long { &mut longs[market as usize] } else { &mut shorts[market as usize] };
            list.push(wanted.key);
            self.accounts[handle as usize].store_threshold(Some(wanted));
        }
        for (index, market) in self.markets.iter_mut().enumerate() {
            debug_assert!(market.long_thresholds.is_empty() && market.short_thresholds.is_empty());
            // collect() sorts and bulk-builds the tree.
            market.long_thresholds = std::mem::take(&mut longs[index]).into_iter().collect();
            market.short_thresholds = std::mem::take(&mut shorts[index]).into_iter().collect();
        }
        for handle in multi {
            self.reindex(handle);
        }
    }

    // -- checks -------------------------------------------------------------------------

    /// Both SPEC invariants and the holders map; Err names what is wrong.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.invariants_hold() {
            return Ok(());
        }
        self.check_invariants_exact()
    }

    /// The index could miss no account: every entry current, nothing stray.
    pub fn check_index(&self) -> Result<(), String> {
        if self.index_whole() {
            return Ok(());
        }
        self.check_index_exact()
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
        let mut holds = Bits::new(self.markets.len() * accounts);
        for (handle, acct) in self.accounts.iter().enumerate() {
            cash += acct.cash;
            for p in &acct.positions {
                qty_by_market[p.market as usize] += p.qty;
                holds.set(p.market as usize * accounts + handle);
            }
        }
        cash == self.net_deposits
            && self.markets.iter().enumerate().all(|(index, market)| {
                let base = index * accounts;
                qty_by_market[index] == ZERO
                    && market.holders.iter().all(|&h| (h as usize) < accounts && holds.get(base + h as usize))
            })
    }

    /// True only if `check_index_exact` finds nothing: the same checks, but the entries
    /// each account should have are collected per list and compared with the list in
    /// one sorted pass, instead of one B-tree search per entry.
    fn index_whole(&self) -> bool {
        let mut wanted: Vec<Vec<i128>> = vec![Vec::new(); self.markets.len() * 4];
        // Traders (not system accounts), and those of them holding two markets or more.
        let mut traders = Bits::new(self.accounts.len());
        let mut multis = Bits::new(self.accounts.len());
        for (handle, acct) in self.accounts.iter().enumerate() {
            if acct.is_system {
                continue;
            }
            traders.set(handle);
            let handle = handle as u32;
            let count = acct.positions.len();
            if count > 1 {
                multis.set(handle as usize);
            }
            if count == 1 {
                let p = &acct.positions[0];
                let market = &self.markets[p.market as usize];
                let key = index_key(threshold(acct.cash, p.qty, market.mmr), handle);
                let want = Threshold { market: p.market, is_long: p.qty > ZERO, key };
                if acct.threshold() != Some(want) || acct.bands.is_some() {
                    return false;
                }
                wanted[p.market as usize * 4 + usize::from(!want.is_long)].push(key);
            } else if acct.threshold_side != 0 {
                return false;
            }
            if count > 1 {
                if !self.bands_still_hold(handle) {
                    return false;
                }
                for band in &acct.bands.as_ref().unwrap().edges {
                    let list = band.market as usize * 4 + 2 + usize::from(!band.is_long);
                    wanted[list].push(index_key(band.edge, handle));
                }
            } else if acct.bands.is_some() {
                return false;
            }
        }
        for (index, market) in self.markets.iter().enumerate() {
            let lists = [&market.long_thresholds, &market.short_thresholds, &market.band_low, &market.band_high];
            for (at, list) in lists.into_iter().enumerate() {
                let keys = &mut wanted[index * 4 + at];
                keys.sort_unstable();
                // Every wanted key is in the list iff the sorted wanted keys are a
                // subsequence of the list's sorted keys.
                let mut listed = list.iter();
                if !keys.iter().all(|key| listed.any(|k| k == key)) {
                    return false;
                }
            }
            let mut holders = 0;
            let mut multi_holders = 0;
            for &holder in &market.holders {
                if holder as usize >= self.accounts.len() {
                    return false;
                }
                holders += usize::from(traders.get(holder as usize));
                multi_holders += usize::from(multis.get(holder as usize));
            }
            if market.long_thresholds.len() + market.short_thresholds.len() + multi_holders != holders
                || market.band_low.len() + market.band_high.len() != multi_holders
            {
                return false;
            }
        }
        true
    }

    /// `check_invariants` one lookup at a time: the reference, and the message.
    fn check_invariants_exact(&self) -> Result<(), String> {
        let mut cash = ZERO;
        let mut qty_by_market = vec![ZERO; self.markets.len()];
        for acct in &self.accounts {
            cash += acct.cash;
            for p in &acct.positions {
                qty_by_market[p.market as usize] += p.qty;
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
        Ok(())
    }

    /// `check_index` one lookup at a time: the reference, and the message.
    fn check_index_exact(&self) -> Result<(), String> {
        for (handle, acct) in self.accounts.iter().enumerate() {
            let handle = handle as u32;
            if acct.is_system {
                continue;
            }
            if acct.positions.len() == 1 {
                let p = &acct.positions[0];
                let market = &self.markets[p.market as usize];
                let key = index_key(threshold(acct.cash, p.qty, market.mmr), handle);
                let wanted = Threshold { market: p.market, is_long: p.qty > ZERO, key };
                if acct.threshold() != Some(wanted) || acct.bands.is_some() {
                    return Err(format!("liquidation index entry of {} is stale", acct.id));
                }
                let list = if wanted.is_long { &market.long_thresholds } else { &market.short_thresholds };
                if !list.contains(&key) {
                    return Err(format!("threshold of {} is not indexed", acct.id));
                }
            } else if acct.threshold_side != 0 {
                return Err(format!("{} has a stray threshold entry", acct.id));
            }
            if acct.positions.len() > 1 {
                if !self.bands_still_hold(handle) {
                    return Err(format!("safety bands of {} no longer hold", acct.id));
                }
                for band in &acct.bands.as_ref().unwrap().edges {
                    let market = &self.markets[band.market as usize];
                    let keys = if band.is_long { &market.band_low } else { &market.band_high };
                    if !keys.contains(&index_key(band.edge, handle)) {
                        return Err(format!("safety edge of {} is not indexed", acct.id));
                    }
                }
            } else if acct.bands.is_some() {
                return Err(format!("{} has stray safety bands", acct.id));
            }
        }
        for market in &self.markets {
            let mut holders = 0;
            let mut multis = 0;
            for &holder in &market.holders {
                let acct = &self.accounts[holder as usize];
                if acct.is_system {
                    continue;
                }
                holders += 1;
                if acct.positions.len() > 1 {
                    multis += 1;
                }
            }
            if market.long_thresholds.len() + market.short_thresholds.len() + multis != holders {
                return Err(format!("liquidation index of {} is incomplete", market.id));
            }
            if market.band_low.len() + market.band_high.len() != multis {
                return Err(format!("safety bands of {} have stray entries", market.id));
            }
        }
        Ok(())
    }

    fn bands_still_hold(&self, account: u32) -> bool {
        let acct = &self.accounts[account as usize];
        let Some(bands) = &acct.bands else { return false };
        if bands.edges.len() != acct.positions.len() {
            return false;
        }
        let mut terms = ZERO;
        for band in &bands.edges {
            let Some(position) = acct.position(band.market) else { return false };
            if (position.qty > ZERO) != band.is_long {
                return false;
            }
            let market = &self.markets[band.market as usize];
            let mark = market.mark();
            let term = if band.is_long {
                if mark < band.edge {
                    return false;
                }
                band.edge * position.qty * (E8 - market.mmr)
            } else {
                if mark > band.edge {
                    return false;
                }
                band.edge * position.qty * (E8 + market.mmr)
            };
            if term != band.term {
                return false;
            }
            terms += term;
        }
        terms == bands.terms && acct.cash * E8 + terms >= ZERO
    }
}

/// A fixed-size bit set, for the checks' passes.
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    #[inline]
    fn set(&mut self, at: usize) {
        self.0[at / 64] |= 1 << (at % 64);
    }

    #[inline]
    fn get(&self, at: usize) -> bool {
        self.0[at / 64] & (1 << (at % 64)) != 0
    }
}

impl Default for Ledger {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod check_tests {
    use super::*;
    use crate::engine::Engine;
    use crate::json_in::parse_input;

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
}
