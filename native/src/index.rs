//! The liquidation index: the same rules as the index half of `clearing/engine/state.py`
//! (read its docstrings for the why). A one-position account sits in its market's threshold
//! list at the last mark where it is liquidatable; an account holding several markets has a
//! safety edge in each, so a tick looks only at the keys it crosses. Keys are single i128s
//! in chunked sorted sets (`keys.rs`).

use crate::ledger::{Bits, Ledger};
use crate::num::{clamp_mark, floor_div, from_big, int, to_big, Int, E8, ZERO};

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
pub(crate) fn mark_floor(mark: i128) -> i128 {
    mark << 32
}

#[inline]
pub(crate) fn key_handle(key: i128) -> u32 {
    key as u32 // the low 32 bits
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
pub(crate) fn market_bit(market: u32) -> u64 {
    if market < 64 {
        1 << market
    } else {
        0
    }
}

#[inline]
pub(crate) fn may_be_in(mask: u64, market: u32) -> bool {
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

    /// The index could miss no account: every entry current, nothing stray.
    pub fn check_index(&self) -> Result<(), String> {
        if self.index_whole() {
            return Ok(());
        }
        self.check_index_exact()
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

    /// `check_index` one lookup at a time: the reference, and the message.
    pub(crate) fn check_index_exact(&self) -> Result<(), String> {
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

#[cfg(test)]
mod tests;
