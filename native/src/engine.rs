//! The handlers and the loss waterfall: `clearing/engine/engine.py` and `waterfall.py`,
//! rule for rule. Outputs are written straight to their JSON bytes, in the exact form
//! `clearing.engine.events.encode_output` gives them.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use num_bigint::BigInt;

use crate::json_in::{write_json_str, Input};
use crate::ledger::{is_system_id, Ledger, Market, MarketV2, BAD_DEBT, DEBT, FEES, FEE_POOL, FUND};
use crate::num::{
    from_big, int, round_half_even_div, to_big as big, write_e16, write_e8, Int, CASH_PER_E8, E16, E8, ZERO,
};
use crate::rules_v2::next_volatility;

/// Why an input was refused; the Python side turns the code into the reject event (its
/// detail text is formatted there, once, for both cores). REJECT_REASONS[value - 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    UnknownMarket = 4,
    ReservedAccount = 5,
    SelfTrade = 6,
    DuplicateFill = 7,
    InsufficientCash = 8,
    InsufficientMargin = 9,
}

pub struct Engine {
    pub ledger: Ledger,
    /// Inputs applied so far (rejects included); the next input gets seq + 1.
    pub seq: u64,
    /// True: a mark move checks every holder exactly instead of asking the index (the
    /// baseline the index is benchmarked and tested against; same outputs, slower).
    pub scan: bool,
    /// The ledger's rules version (SPEC §9), fixed for its life: 1 is §1-§8 alone, 2
    /// adds §9 (`waterfall_v2.rs`, funding, the volatility estimate).
    pub rules: u8,
}

/// The rules versions this core implements (`clearing.engine.native.NATIVE_RULES_VERSIONS`).
pub const RULES_VERSIONS: [u8; 2] = [1, 2];

/// The liquidation queue of a resolve loop: the heap of candidates and how many were
/// pushed (a push's number breaks the last ties, oldest first).
pub(crate) struct Queue {
    heap: BinaryHeap<Candidate>,
    pushes: u64,
}

/// A liquidation's priority: E/MM as an exact fraction (MM > 0), then the account id.
pub(crate) struct Candidate {
    pub(crate) equity: Int,
    pub(crate) maintenance: Int,
    id: compact_str::CompactString,
    push: u64,
    pub(crate) account: u32,
}

pub(crate) fn compare_ratio(a: (Int, Int), b: (Int, Int)) -> Ordering {
    // a.0/a.1 vs b.0/b.1 with positive denominators: cross-multiply, in 256 bits when the
    // products fit and in arbitrary precision when they do not.
    match (a.0.checked_mul(b.1), b.0.checked_mul(a.1)) {
        (Some(left), Some(right)) => left.cmp(&right),
        _ => (big(a.0) * big(b.1)).cmp(&(big(b.0) * big(a.1))),
    }
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    // Reversed: BinaryHeap is a max-heap and the smallest (E/MM, id, push) goes first.
    fn cmp(&self, other: &Self) -> Ordering {
        compare_ratio((other.equity, other.maintenance), (self.equity, self.maintenance))
            .then_with(|| other.id.cmp(&self.id))
            .then_with(|| other.push.cmp(&self.push))
    }
}

impl Engine {
    pub fn new() -> Self {
        Self::with_rules(1)
    }

    /// An empty ledger under a rules version of `RULES_VERSIONS` (the caller checks).
    pub fn with_rules(rules: u8) -> Self {
        debug_assert!(RULES_VERSIONS.contains(&rules));
        Engine { ledger: Ledger::new(), seq: 0, scan: false, rules }
    }

    /// Apply one validated input (its seq already counted); outputs appended as JSON.
    pub fn apply(&mut self, input: &Input<'_>, out: &mut Vec<Vec<u8>>) -> Result<(), Refusal> {
        let result = match input {
            Input::Fill(fill) => self.fill(
                fill.fill_id,
                fill.market,
                int(fill.price_e8),
                int(fill.qty_e8),
                fill.buyer,
                fill.seller,
                int(fill.buyer_fee_e8),
                int(fill.seller_fee_e8),
                out,
            ),
            Input::Oracle { market, price_e8 } => self.oracle(market, int(*price_e8), out),
            Input::Deposit { account, amount_e8 } => self.deposit(account, int(*amount_e8)),
            Input::Withdraw { account, amount_e8 } => self.withdraw(account, int(*amount_e8), out),
            Input::Book { market, bids, asks } => self.book(market, bids, asks),
            Input::Market { market, imr_e8, mmr_e8, liq_fee_e8, max_oracle_move_e8, v2 } => {
                let params = (int(*imr_e8), int(*mmr_e8), int(*liq_fee_e8), max_oracle_move_e8.map(int));
                self.market(market, params, v2.as_ref(), out);
                Ok(())
            }
            Input::Funding { market, rate_e8 } => self.funding(market, int(*rate_e8), out),
        };
        self.ledger.assert_balanced();
        result
    }

    fn market_of(&self, id: &str) -> Result<u32, Refusal> {
        self.ledger.market_index(id).ok_or(Refusal::UnknownMarket)
    }

    /// Create a market or replace its parameters. `v2` carries SPEC §9's fields of a
    /// version-2 input (None under version 1, which keeps the defaults and never reads
    /// them); the volatility estimate is kept: it describes the prices, not the parameters.
    fn market(
        &mut self,
        id: &str,
        (imr, mmr, liq_fee, max_move): (Int, Int, Int, Option<Int>),
        v2: Option<&MarketV2>,
        out: &mut Vec<Vec<u8>>,
    ) {
        let ledger = &mut self.ledger;
        let set_v2 = |market: &mut Market| {
            if let Some(v2) = v2 {
                market.v2 = MarketV2 { vol: market.v2.vol, ..v2.clone() };
            }
        };
        let Some(index) = ledger.market_index(id) else {
            let index = ledger.markets.len() as u32;
            let mut market = Market::new(id, imr, mmr, liq_fee, max_move);
            set_v2(&mut market);
            ledger.markets.push(market);
            ledger.market_ids.insert(id.into(), index);
            return;
        };
        let market = &mut ledger.markets[index as usize];
        market.imr = imr;
        market.mmr = mmr;
        market.liq_fee = liq_fee;
        market.max_move = max_move;
        market.held = None;
        set_v2(market);
        let mut holders: Vec<u32> = market.holders.iter().copied().collect();
        holders.sort_unstable();
        let unsafe_: Vec<u32> = holders.into_iter().filter(|&h| !ledger.reindex(h)).collect();
        self.resolve(unsafe_, None, out);
    }

    /// SPEC §9.5: every holder pays `round16(q * m * rate)`; the fee pool takes the
    /// rounding residual, so cash is conserved; then payers and payees are re-examined.
    fn funding(&mut self, market_id: &str, rate: Int, out: &mut Vec<Vec<u8>>) -> Result<(), Refusal> {
        let market = self.market_of(market_id)?;
        let (paid, net, unsafe_) = match self.ledger.markets[market as usize].mark {
            None => (ZERO, ZERO, Vec::new()), // without a mark there are no holders
            Some(mark) => self.ledger.pay_funding(market, mark, rate),
        };
        self.ledger.move_cash(FEES, net);
        let mut event = self.event_head("funding");
        field_str(&mut event, "market", market_id);
        field_num(&mut event, "rate", rate, write_e8);
        field_num(&mut event, "paid", paid, write_e16);
        out.push(finish(event));
        if !unsafe_.is_empty() {
            self.resolve(unsafe_, None, out);
        }
        Ok(())
    }

    fn deposit(&mut self, id: &str, amount: Int) -> Result<(), Refusal> {
        if id == FEE_POOL || id == BAD_DEBT {
            return Err(Refusal::ReservedAccount);
        }
        let amount = amount * CASH_PER_E8;
        let ledger = &mut self.ledger;
        let account = ledger.account(id);
        ledger.move_cash(account, amount);
        ledger.net_deposits += amount;
        ledger.reindex_cash(account);
        Ok(())
    }

    fn withdraw(&mut self, id: &str, amount_e8: Int, out: &mut Vec<Vec<u8>>) -> Result<(), Refusal> {
        if is_system_id(id) {
            return Err(Refusal::ReservedAccount);
        }
        let ledger = &mut self.ledger;
        let amount = amount_e8 * CASH_PER_E8;
        let Some(account) = ledger.account_handle(id) else { return Err(Refusal::InsufficientCash) };
        if amount > ledger.accounts[account as usize].cash {
            return Err(Refusal::InsufficientCash);
        }
        if (ledger.equity(account) - amount) * E8 < ledger.initial_requirement(account) {
            return Err(Refusal::InsufficientMargin);
        }
        ledger.move_cash(account, -amount);
        ledger.net_deposits -= amount;
        ledger.reindex_cash(account);
        let mut event = self.event_head("withdrawal");
        field_str(&mut event, "account", id);
        field_num(&mut event, "amount", amount_e8, write_e8);
        out.push(finish(event));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        fill_id: &str,
        market_id: &str,
        price: Int,
        qty: Int,
        buyer_id: &str,
        seller_id: &str,
        buyer_fee: Int,
        seller_fee: Int,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<(), Refusal> {
        let market = self.market_of(market_id)?;
        for side in [buyer_id, seller_id] {
            if side == FEE_POOL || side == BAD_DEBT {
                return Err(Refusal::ReservedAccount);
            }
        }
        if buyer_id == seller_id {
            return Err(Refusal::SelfTrade);
        }
        let ledger = &mut self.ledger;
        // One probe of a table as large as the fill history: insert says if it was there.
        if !ledger.fill_ids.insert(fill_id.into()) {
            return Err(Refusal::DuplicateFill);
        }

        let notional = qty * price;
        let buyer = ledger.account(buyer_id);
        let seller = ledger.account(seller_id);
        ledger.prefetch_account(seller); // loads while the buyer's side is done
        self.trade(buyer, market, qty, price);
        self.trade(seller, market, -qty, price);
        let ledger = &mut self.ledger;
        let buyer_fee = buyer_fee * CASH_PER_E8;
        let seller_fee = seller_fee * CASH_PER_E8;
        ledger.move_cash(buyer, -(notional + buyer_fee));
        ledger.move_cash(seller, notional - seller_fee);
        ledger.move_cash(FEES, buyer_fee + seller_fee);
        let mkt = &mut ledger.markets[market as usize];
        let mark_moved = !mkt.oracle_seen && mkt.mark != Some(price);
        if mark_moved {
            mkt.mark = Some(price);
        }
        let mut checked = Vec::new();
        if mark_moved && self.scan {
            ledger.reindex(buyer);
            ledger.reindex(seller);
            checked.extend([buyer, seller]); // a side that went flat is no longer a holder
            checked.extend(self.sorted_holders(market));
        } else if mark_moved {
            // Before the first tick a fill moves the mark: ask the index, like a tick.
            if !ledger.reindex(buyer) {
                checked.push(buyer);
            }
            if !ledger.reindex(seller) {
                checked.push(seller);
            }
            let (liquidatable, crossed) = ledger.markets[market as usize].liquidation_candidates(price);
            checked.extend(liquidatable);
            for account in crossed {
                if !ledger.reindex(account) {
                    checked.push(account);
                }
            }
        } else {
            if !ledger.reindex_fill(buyer, market) {
                checked.push(buyer);
            }
            if !ledger.reindex_fill(seller, market) {
                checked.push(seller);
            }
        }
        if !checked.is_empty() {
            self.resolve(checked, Some(market), out);
        }
        if mark_moved && self.scan {
            self.rebuild_bands(market);
        }
        Ok(())
    }

    /// The market's holders in handle order (a deterministic order for the scan).
    fn sorted_holders(&self, market: u32) -> Vec<u32> {
        let mut holders: Vec<u32> = self.ledger.markets[market as usize].holders.iter().copied().collect();
        holders.sort_unstable();
        holders
    }

    /// The scan's upkeep after a mark move: re-centre every multi-market holder's bands
    /// (one-position thresholds do not depend on the mark).
    fn rebuild_bands(&mut self, market: u32) {
        for holder in self.sorted_holders(market) {
            if self.ledger.accounts[holder as usize].positions.len() > 1 {
                self.ledger.reindex(holder);
            }
        }
    }

    /// Move a position by `dq` at `price`, keeping K per SPEC §2 and the holders exact.
    fn trade(&mut self, account: u32, market: u32, dq: Int, price: Int) {
        let ledger = &mut self.ledger;
        let acct = &mut ledger.accounts[account as usize];
        let Some(at) = acct.position_at(market) else {
            let k = if acct.is_system { ZERO } else { -dq * price };
            acct.push_position(crate::ledger::Position { market, qty: dq, k });
            ledger.markets[market as usize].holders.insert(account);
            ledger.move_qty(market, ZERO, dq);
            return;
        };
        let is_system = acct.is_system;
        let position = &mut acct.positions[at];
        let old_qty = position.qty;
        let new_qty = old_qty + dq;
        if new_qty == ZERO {
            acct.remove_position(at);
            ledger.markets[market as usize].holders.remove(&account);
            ledger.move_qty(market, old_qty, ZERO);
            return;
        }
        if is_system {
            position.k = ZERO;
        } else if (old_qty > ZERO) != (new_qty > ZERO) {
            position.k = -new_qty * price; // flipped: only the opening part counts
        } else {
            position.k -= dq * price;
        }
        position.qty = new_qty;
        ledger.move_qty(market, old_qty, new_qty);
    }

    fn oracle(&mut self, market_id: &str, price: Int, out: &mut Vec<Vec<u8>>) -> Result<(), Refusal> {
        let market = self.market_of(market_id)?;
        let mkt = &mut self.ledger.markets[market as usize];
        if let (Some(max_move), Some(mark)) = (mkt.max_move, mkt.mark) {
            let confirmed = mkt.held.is_some_and(|held| (price - held).abs() * E8 <= max_move * held);
            if !confirmed && (price - mark).abs() * E8 > max_move * mark {
                mkt.held = Some(price);
                let mut event = self.event_head("oracle_held");
                field_str(&mut event, "market", market_id);
                field_num(&mut event, "price", price, write_e8);
                out.push(finish(event));
                return Ok(());
            }
        }
        if self.rules != 1 {
            if let Some(mark) = mkt.mark {
                // SPEC §9.3: every accepted tick from an existing mark, before liquidations.
                mkt.v2.vol = next_volatility(mkt.v2.vol, mark, price, mkt.v2.vol_lambda);
            }
        }
        mkt.mark = Some(price);
        mkt.held = None;
        mkt.oracle_seen = true;
        if self.scan {
            let holders = self.sorted_holders(market);
            self.resolve(holders, None, out);
            self.rebuild_bands(market);
            return Ok(());
        }
        let (liquidatable, crossed) = self.ledger.markets[market as usize].liquidation_candidates(price);
        let mut checked = liquidatable;
        for account in crossed {
            if !self.ledger.reindex(account) {
                checked.push(account);
            }
        }
        if !checked.is_empty() {
            self.resolve(checked, None, out);
        }
        Ok(())
    }

    fn book(&mut self, market_id: &str, bids: &[(i128, i128)], asks: &[(i128, i128)]) -> Result<(), Refusal> {
        let market = self.market_of(market_id)?;
        let book = &mut self.ledger.markets[market as usize].book;
        book.bids.clear();
        book.asks.clear();
        for &(price, qty) in bids {
            *book.bids.entry(-int(price)).or_insert(ZERO) += int(qty);
        }
        for &(price, qty) in asks {
            *book.asks.entry(int(price)).or_insert(ZERO) += int(qty);
        }
        Ok(())
    }

    // -- the waterfall ------------------------------------------------------------------

    /// Settle every checked account that is bankrupt or liquidatable, by the ledger's rules.
    fn resolve(&mut self, checked: Vec<u32>, bankrupt_market: Option<u32>, out: &mut Vec<Vec<u8>>) {
        if self.rules == 1 {
            self.resolve_v1(checked, bankrupt_market, out);
        } else {
            self.resolve_v2(checked, bankrupt_market, out);
        }
    }

    /// Settle every checked account that is bankrupt or liquidatable, in SPEC §4 order.
    fn resolve_v1(&mut self, checked: Vec<u32>, bankrupt_market: Option<u32>, out: &mut Vec<Vec<u8>>) {
        let (mut candidates, bankrupt) = self.gather_candidates(checked, bankrupt_market.is_some());
        if let Some(market) = bankrupt_market {
            for account in bankrupt {
                // Clawback payers join the candidates (they were debited).
                self.cover_deficit(account, &[market], out, &mut candidates);
            }
        }
        let mut queue = self.liquidation_queue(&candidates);
        while let Some(account) = self.next_liquidatable(&mut queue) {
            let mut debited = Vec::new();
            self.liquidate(account, out, &mut debited);
            self.enqueue(&mut queue, debited);
        }
    }

    /// The accounts a resolve loop settles: the checked non-system ones, each once, in the
    /// order checked; and, when a fill was applied (`after_fill`), those of them it left
    /// bankrupt (flat with negative cash), by account id: they are settled first.
    pub(crate) fn gather_candidates(&self, checked: Vec<u32>, after_fill: bool) -> (Vec<u32>, Vec<u32>) {
        let accounts = &self.ledger.accounts;
        let mut candidates: Vec<u32> = Vec::with_capacity(checked.len());
        let mut unique = rustc_hash::FxHashSet::default();
        for account in checked {
            if !accounts[account as usize].is_system && unique.insert(account) {
                candidates.push(account);
            }
        }
        let mut bankrupt: Vec<u32> = Vec::new();
        if after_fill {
            bankrupt = candidates
                .iter()
                .copied()
                .filter(|&a| accounts[a as usize].positions.is_empty() && accounts[a as usize].cash < ZERO)
                .collect();
            bankrupt.sort_by(|a, b| accounts[*a as usize].id.cmp(&accounts[*b as usize].id));
        }
        (candidates, bankrupt)
    }

    /// The queue of the liquidatable accounts among `candidates` (each queued once).
    pub(crate) fn liquidation_queue(&self, candidates: &[u32]) -> Queue {
        let mut queue = Queue { heap: BinaryHeap::new(), pushes: 0 };
        let mut seen = rustc_hash::FxHashSet::default();
        self.enqueue(&mut queue, candidates.iter().copied().filter(|&account| seen.insert(account)));
        queue
    }

    /// Queue each of `accounts` that is liquidatable now, under its current key.
    pub(crate) fn enqueue(&self, queue: &mut Queue, accounts: impl IntoIterator<Item = u32>) {
        for account in accounts {
            if let Some((equity, maintenance)) = self.ledger.liquidation_key(account) {
                queue.pushes += 1;
                queue.heap.push(self.candidate(account, equity, maintenance, queue.pushes));
            }
        }
    }

    /// The next account to liquidate: the queue's first entry whose key is still current
    /// (an account whose key changed was queued again under the new one, or is safe now).
    pub(crate) fn next_liquidatable(&self, queue: &mut Queue) -> Option<u32> {
        while let Some(top) = queue.heap.pop() {
            match self.ledger.liquidation_key(top.account) {
                Some(key) if compare_ratio(key, (top.equity, top.maintenance)) == Ordering::Equal => {
                    return Some(top.account)
                }
                _ => continue,
            }
        }
        None
    }

    pub(crate) fn candidate(&self, account: u32, equity: Int, maintenance: Int, push: u64) -> Candidate {
        Candidate { equity, maintenance, id: self.ledger.accounts[account as usize].id.clone(), push, account }
    }

    fn liquidate(&mut self, account: u32, out: &mut Vec<Vec<u8>>, debited: &mut Vec<u32>) {
        let ledger = &self.ledger;
        let mut held: Vec<u32> = ledger.accounts[account as usize].positions.iter().map(|p| p.market).collect();
        held.sort_by(|a, b| ledger.markets[*a as usize].id.cmp(&ledger.markets[*b as usize].id));
        // market, qty, proceeds, mark, fee (e16)
        let mut closed: Vec<(u32, Int, Int, Int, Int)> = Vec::with_capacity(held.len());
        for &market in &held {
            let qty = self.ledger.accounts[account as usize].position(market).unwrap().qty;
            let (proceeds, mark, fee) = self.close_to_fund(account, market, qty);
            closed.push((market, qty, proceeds, mark, fee));
        }
        let mut cash_left = self.ledger.accounts[account as usize].cash.max(ZERO);
        for (market, qty, proceeds, mark, fee) in closed {
            let charged = fee.min(cash_left);
            cash_left -= charged;
            self.ledger.move_cash(account, -charged);
            self.ledger.move_cash(FUND, charged);
            out.push(finish(self.liquidation_event(account, market, qty, proceeds, mark, charged)));
        }
        if self.ledger.accounts[account as usize].cash < ZERO {
            self.cover_deficit(account, &held, out, debited);
        }
        self.ledger.reindex(account);
    }

    /// Close `qty` (signed) of `account`'s position in `market` against the book at the
    /// mark, the fund taking it over; the rest keeps its K moved by the proceeds (the
    /// trade rule), a flat position K = 0. Returns (proceeds, mark, liquidation fee), e16.
    pub(crate) fn close_to_fund(&mut self, account: u32, market: u32, qty: Int) -> (Int, Int, Int) {
        let ledger = &mut self.ledger;
        let position = ledger.accounts[account as usize].position(market).unwrap();
        let (held, k) = (position.qty, position.k);
        let mkt = &mut ledger.markets[market as usize];
        let mark = mkt.mark();
        let proceeds = mkt.book.close_out(qty, mark);
        let liq_fee = mkt.liq_fee;
        ledger.move_cash(account, proceeds);
        ledger.move_cash(FUND, -proceeds);
        let left = held - qty;
        ledger.set_position(account, market, left, if left != ZERO { k + proceeds } else { ZERO });
        let fund_qty = ledger.accounts[FUND as usize].position(market).map_or(ZERO, |p| p.qty) + qty;
        // K of system accounts is never read (clawbacks skip them), so it stays 0.
        ledger.set_position(FUND, market, fund_qty, ZERO);
        let fee = round_half_even_div(liq_fee * proceeds.abs(), E16);
        (proceeds, mark, fee * CASH_PER_E8)
    }

    /// A `liquidation` event's shared fields, left open for a version's own ones.
    pub(crate) fn liquidation_event(
        &self,
        account: u32,
        market: u32,
        qty: Int,
        proceeds: Int,
        mark: Int,
        fee: Int,
    ) -> Vec<u8> {
        let mut event = self.event_head("liquidation");
        field_str(&mut event, "account", &self.ledger.accounts[account as usize].id);
        field_str(&mut event, "market", &self.ledger.markets[market as usize].id);
        field_num(&mut event, "qty", qty, write_e8);
        field_num(&mut event, "proceeds", proceeds, write_e16);
        field_num(&mut event, "mark", mark, write_e8);
        field_num(&mut event, "fee", fee, write_e16);
        event
    }

    /// Steps 3-5: fund draw, clawback, bad debt. Leaves the account at exactly 0 cash.
    fn cover_deficit(&mut self, account: u32, held: &[u32], out: &mut Vec<Vec<u8>>, debited: &mut Vec<u32>) {
        let rest = self.draw_fund(account, out);
        if rest == ZERO {
            return;
        }
        // Profit bases, summed over the markets the account held.
        let mut bases: rustc_hash::FxHashMap<u32, Int> = rustc_hash::FxHashMap::default();
        self.ledger.for_each_profit(account, held, |holder, _, base| *bases.entry(holder).or_insert(ZERO) += base);
        let total = bases.values().fold(ZERO, |sum, b| sum + *b);
        let taken = rest.min(total);
        let mut parts: Vec<(u32, Int)> = bases.into_iter().collect();
        self.split_by_id(taken, total, &mut parts);
        for (payer, amount) in parts {
            if amount != ZERO {
                self.pay_clawback(payer, account, amount, out, debited);
            }
        }
        self.book_bad_debt(account, rest - taken, out);
    }

    /// Step 3: the fund covers what it can of `account`'s deficit. Returns what is left.
    pub(crate) fn draw_fund(&mut self, account: u32, out: &mut Vec<Vec<u8>>) -> Int {
        let deficit = -self.ledger.accounts[account as usize].cash;
        let draw = deficit.min(self.ledger.equity(FUND).max(ZERO));
        if draw != ZERO {
            self.ledger.move_cash(FUND, -draw);
            self.ledger.move_cash(account, draw);
            let mut event = self.event_head("fund_draw");
            field_str(&mut event, "account", &self.ledger.accounts[account as usize].id);
            field_num(&mut event, "amount", draw, write_e16);
            out.push(finish(event));
        }
        deficit - draw
    }

    /// Sort `parts` (payer, base) by account id and scale the bases down to `taken` of
    /// their `total` by largest remainder (nothing to scale when all is taken).
    pub(crate) fn split_by_id(&self, taken: Int, total: Int, parts: &mut [(u32, Int)]) {
        let accounts = &self.ledger.accounts;
        parts.sort_by(|a, b| accounts[a.0 as usize].id.cmp(&accounts[b.0 as usize].id));
        if taken != total {
            split_largest_remainder(taken, total, parts);
        }
    }

    /// Step 4's payment: `payer` gives `amount` to `account`, and is re-examined.
    pub(crate) fn pay_clawback(
        &mut self,
        payer: u32,
        account: u32,
        amount: Int,
        out: &mut Vec<Vec<u8>>,
        debited: &mut Vec<u32>,
    ) {
        self.ledger.move_cash(payer, -amount);
        self.ledger.move_cash(account, amount);
        self.ledger.reindex_cash(payer);
        debited.push(payer);
        let mut event = self.event_head("clawback");
        field_str(&mut event, "account", &self.ledger.accounts[payer as usize].id);
        field_num(&mut event, "amount", amount, write_e16);
        field_str(&mut event, "cause", &self.ledger.accounts[account as usize].id);
        out.push(finish(event));
    }

    /// Step 5: what no one covered is bad debt, leaving `account` at exactly 0 cash.
    pub(crate) fn book_bad_debt(&mut self, account: u32, amount: Int, out: &mut Vec<Vec<u8>>) {
        if amount != ZERO {
            self.ledger.move_cash(DEBT, -amount);
            self.ledger.move_cash(account, amount);
            let mut event = self.event_head("bad_debt");
            field_str(&mut event, "account", &self.ledger.accounts[account as usize].id);
            field_num(&mut event, "amount", amount, write_e16);
            out.push(finish(event));
        }
        assert!(self.ledger.accounts[account as usize].cash == ZERO, "a covered deficit leaves 0 cash");
    }

    // -- output encoding ----------------------------------------------------------------

    pub(crate) fn event_head(&self, kind: &str) -> Vec<u8> {
        let mut event = Vec::with_capacity(160);
        event.extend_from_slice(b"{\"type\":\"");
        event.extend_from_slice(kind.as_bytes());
        event.extend_from_slice(b"\",\"seq\":");
        event.extend_from_slice(self.seq.to_string().as_bytes());
        event
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

/// Split `total` pro rata to the weights (whose sum is `weight_sum`) in whole units so the
/// parts sum exactly to it; leftover units to the largest remainders, ties to the smaller
/// id. `parts` arrives sorted by account id holding the weights and leaves holding the parts.
pub(crate) fn split_largest_remainder(total: Int, weight_sum: Int, parts: &mut [(u32, Int)]) {
    let total_big = big(total);
    let sum_big = big(weight_sum);
    let mut remainders: Vec<(BigInt, usize)> = Vec::with_capacity(parts.len());
    let mut assigned = ZERO;
    for (index, part) in parts.iter_mut().enumerate() {
        let product = &total_big * big(part.1);
        let share = &product / &sum_big;
        let remainder = product - &share * &sum_big;
        part.1 = from_big(&share);
        assigned += part.1;
        remainders.push((remainder, index));
    }
    let leftover = total - assigned;
    if leftover > ZERO {
        // Larger remainder first; equal remainders keep id order (the sort is stable).
        remainders.sort_by(|a, b| b.0.cmp(&a.0));
        let leftover = leftover.as_usize();
        for (_, index) in remainders.into_iter().take(leftover) {
            parts[index].1 += int(1);
        }
    }
}

pub(crate) fn field_str(event: &mut Vec<u8>, name: &str, value: &str) {
    event.extend_from_slice(b",\"");
    event.extend_from_slice(name.as_bytes());
    event.extend_from_slice(b"\":");
    write_json_str(event, value);
}

pub(crate) fn field_num(event: &mut Vec<u8>, name: &str, value: Int, write: fn(&mut Vec<u8>, Int)) {
    event.extend_from_slice(b",\"");
    event.extend_from_slice(name.as_bytes());
    event.extend_from_slice(b"\":\"");
    write(event, value);
    event.push(b'"');
}

pub(crate) fn finish(mut event: Vec<u8>) -> Vec<u8> {
    event.push(b'}');
    event
}
