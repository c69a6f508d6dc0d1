//! The loss waterfall under rules version 2 (SPEC §9 on top of §4):
//! `clearing/engine/waterfall_v2.py`, rule for rule. One liquidation step at a time
//! (§9.2), charged fees split between the fund and the fee pool by volatility (§9.3), a
//! deficit left after the fund draw handed first to auto-deleveraging in `adl` markets
//! (§9.4), then to clawbacks that take only real, remaining profit and lower K (§9.1),
//! then to bad debt. Version 1's waterfall is in `engine.rs`, with the steps the two share.

use std::cmp::Ordering;

use crate::engine::{compare_ratio, field_num, field_str, finish, split_largest_remainder, Engine};
use crate::ledger::{FEES, FUND};
use crate::num::{write_e16, write_e8, Int, E8, ZERO};
use crate::rules_v2::{ceil8_fraction, floor16, fund_share, mul_div_floor, pool_part};

/// One position a step closed: market, signed qty closed, proceeds, fee (e16).
struct Closed {
    market: u32,
    qty: Int,
    proceeds: Int,
    fee: Int,
}

/// An ADL candidate: handle, profit `u` (e16) and equity (e16) when ranked.
struct Ranked {
    holder: u32,
    profit: Int,
    equity: Int,
}

/// How many of a pass's best candidates the first scan keeps (see `deleverage`).
const RANK_BATCH: usize = 1024;

impl Engine {
    /// Settle every checked account that is bankrupt or liquidatable, one step at a time
    /// (SPEC §9.2's loop). `bankrupt_market` is the market of the fill being applied.
    /// Only a fill leaves an account bankrupt; a step, clawback or ADL payment never does
    /// (their caps keep a payer at or above its requirement), so settling the fill's
    /// bankrupt accounts first is "before each step".
    pub(crate) fn resolve_v2(&mut self, checked: Vec<u32>, bankrupt_market: Option<u32>, out: &mut Vec<Vec<u8>>) {
        let (mut candidates, bankrupt) = self.gather_candidates(checked, bankrupt_market.is_some());
        if let Some(market) = bankrupt_market {
            for account in bankrupt {
                self.cover_deficit_v2(account, &[(market, ZERO)], true, out, &mut candidates);
            }
        }
        let mut queue = self.liquidation_queue(&candidates);
        // Accounts that took a partial step in this input: their next step is a full one.
        let mut stepped = rustc_hash::FxHashSet::default();
        while let Some(account) = self.next_liquidatable(&mut queue) {
            let mut debited = vec![account];
            if self.step(account, stepped.contains(&account), out, &mut debited) {
                stepped.insert(account);
            }
            self.enqueue(&mut queue, debited);
        }
    }

    /// One liquidation step of a liquidatable account; true if it was a partial one.
    fn step(&mut self, account: u32, stepped_before: bool, out: &mut Vec<Vec<u8>>, debited: &mut Vec<u32>) -> bool {
        let ledger = &self.ledger;
        let mut held: Vec<u32> = ledger.accounts[account as usize].positions.iter().map(|p| p.market).collect();
        held.sort_by(|a, b| ledger.markets[*a as usize].id.cmp(&ledger.markets[*b as usize].id));
        let partial = !(stepped_before
            || int2(ledger.equity(account) * E8) < ledger.maintenance_requirement(account)
            || held.iter().all(|&m| ledger.markets[m as usize].v2.liq_step == E8));
        let mut closed: Vec<Closed> = Vec::with_capacity(held.len());
        for &market in &held {
            let qty = self.ledger.accounts[account as usize].position(market).unwrap().qty;
            let mut size = qty.abs();
            if partial {
                size = size.min(ceil8_fraction(size, self.ledger.markets[market as usize].v2.liq_step));
            }
            let closed_qty = if qty > ZERO { size } else { -size };
            let (proceeds, _, fee) = self.close_to_fund(account, market, closed_qty);
            closed.push(Closed { market, qty: closed_qty, proceeds, fee });
        }
        // Fees are charged up to max(0, E) after the close-outs (= max(0, C) once flat).
        let mut cash_left = self.ledger.equity(account).max(ZERO);
        for c in &closed {
            let charged = c.fee.min(cash_left);
            cash_left -= charged;
            let mkt = &self.ledger.markets[c.market as usize];
            let pool = pool_part(charged, fund_share(&mkt.v2));
            let mark = mkt.mark();
            self.ledger.move_cash(account, -charged);
            self.ledger.move_cash(FEES, pool);
            self.ledger.move_cash(FUND, charged - pool);
            let mut event = self.liquidation_event(account, c.market, c.qty, c.proceeds, mark, charged);
            field_num(&mut event, "fund_fee", charged - pool, write_e16);
            out.push(finish(event));
        }
        let acct = &self.ledger.accounts[account as usize];
        if acct.positions.is_empty() && acct.cash < ZERO {
            let taken: Vec<(u32, Int)> = closed.iter().map(|c| (c.market, c.qty)).collect();
            self.cover_deficit_v2(account, &taken, false, out, debited);
        }
        self.ledger.reindex(account);
        partial
    }

    /// Steps 3-5 under version 2: fund draw, ADL, clawback, bad debt. `taken` lists the
    /// markets the step closed with the signed quantity the fund took over in each
    /// (market-id order); a bankrupt account's is the fill's market, nothing to hand over.
    fn cover_deficit_v2(
        &mut self,
        account: u32,
        taken: &[(u32, Int)],
        bankrupt: bool,
        out: &mut Vec<Vec<u8>>,
        debited: &mut Vec<u32>,
    ) {
        let mut rest = self.draw_fund(account, out);
        if rest == ZERO {
            return;
        }
        let mut claw_markets: Vec<u32> = Vec::with_capacity(taken.len());
        for &(market, taken_qty) in taken {
            if bankrupt || !self.ledger.markets[market as usize].v2.adl {
                claw_markets.push(market);
            } else if rest > ZERO {
                rest = self.deleverage(account, market, taken_qty, rest, out, debited);
            }
        }
        if rest > ZERO && !claw_markets.is_empty() {
            rest -= self.claw_back_v2(account, &claw_markets, rest, out, debited);
        }
        self.book_bad_debt(account, rest, out);
    }

    /// One ADL pass (SPEC §9.4) over `market`; returns the deficit `R` left. Every
    /// candidate that traded joins `debited` (re-examined, like a clawback payer).
    fn deleverage(
        &mut self,
        account: u32,
        market: u32,
        taken_qty: Int,
        mut rest: Int,
        out: &mut Vec<Vec<u8>>,
        debited: &mut Vec<u32>,
    ) -> Int {
        let mark = self.ledger.markets[market as usize].mark();
        let whole = taken_qty.abs(); // |Q|
        let mut handed = whole; // U: left to hand over
        let pass_rest = rest; // R_M

        // Ranked once at the start of the pass. The scan keeps only the best
        // RANK_BATCH candidates (a pass usually takes a few of a market's); if those run
        // out first, the rest are ranked by a second scan that skips the ones done (their
        // values are the same as at the start: only its own hand-over moves a candidate).
        let taken_long = taken_qty > ZERO;
        let mut done = rustc_hash::FxHashSet::default();
        let mut ranked = self.ledger.adl_candidates(account, market, taken_long, mark, RANK_BATCH, &done);
        let mut complete = ranked.len() < RANK_BATCH; // no candidate was left out
        let mut next = 0;
        while handed != ZERO && rest != ZERO {
            if next == ranked.len() {
                if complete {
                    break;
                }
                ranked = self.ledger.adl_candidates(account, market, taken_long, mark, usize::MAX, &done);
                (complete, next) = (true, 0);
                continue;
            }
            let candidate = &ranked[next];
            next += 1;
            done.insert(candidate.holder);
            let holder = candidate.holder;
            let position = self.ledger.accounts[holder as usize].position(market).unwrap();
            let (qty, k) = (position.qty, position.k);
            let size = qty.abs().min(handed);
            // E - MM as ranked: nothing in the pass has touched this candidate yet.
            let (equity, maintenance) = self.ledger.equity_and_maintenance(holder);
            let room = equity * E8 - maintenance;
            let cap = mul_div_floor((candidate.profit * E8).min(room), size, qty.abs() * E8);
            let share = if size == handed { rest } else { mul_div_floor(size, pass_rest, whole) };
            let paid = rest.min(cap).min(share);
            let dq = if qty < ZERO { size } else { -size }; // towards 0: a short buys back
            let left = qty + dq;
            let k = if left != ZERO { k - dq * mark - paid } else { ZERO };
            let ledger = &mut self.ledger;
            ledger.set_position(holder, market, left, k);
            ledger.move_cash(holder, -(dq * mark + paid));
            ledger.move_cash(FUND, dq * mark);
            let fund_qty = ledger.accounts[FUND as usize].position(market).map_or(ZERO, |p| p.qty) - dq;
            ledger.set_position(FUND, market, fund_qty, ZERO);
            ledger.move_cash(account, paid);
            handed -= size;
            rest -= paid;
            ledger.reindex(holder);
            debited.push(holder);
            let mut event = self.event_head("adl");
            field_str(&mut event, "account", &self.ledger.accounts[holder as usize].id);
            field_str(&mut event, "market", &self.ledger.markets[market as usize].id);
            field_num(&mut event, "qty", -dq, write_e8);
            field_num(&mut event, "amount", paid, write_e16);
            field_str(&mut event, "cause", &self.ledger.accounts[account as usize].id);
            out.push(finish(event));
        }
        rest
    }

    /// Step 4 with SPEC §9.1: each payer's base is its profit in `markets` capped by
    /// `floor16(E - MM)`; what it pays lowers its K per market, pro rata to each market's
    /// profit. Returns the amount taken.
    fn claw_back_v2(
        &mut self,
        account: u32,
        markets: &[u32],
        rest: Int,
        out: &mut Vec<Vec<u8>>,
        debited: &mut Vec<u32>,
    ) -> Int {
        let ledger = &self.ledger;
        // payer -> [(market, max(0, q*m + K) > 0)]
        let mut profits: rustc_hash::FxHashMap<u32, Vec<(u32, Int)>> = rustc_hash::FxHashMap::default();
        ledger.for_each_profit(account, markets, |holder, market, profit| {
            profits.entry(holder).or_default().push((market, profit));
        });
        let mut bases: Vec<(u32, Int)> = Vec::with_capacity(profits.len());
        for (&holder, by_market) in &profits {
            let room = ledger.equity(holder) * E8 - ledger.maintenance_requirement(holder);
            let sum = by_market.iter().fold(ZERO, |total, p| total + p.1);
            let base = sum.min(floor16(room).max(ZERO));
            if base > ZERO {
                bases.push((holder, base));
            }
        }
        let total = bases.iter().fold(ZERO, |sum, b| sum + b.1);
        let taken = rest.min(total);
        self.split_by_id(taken, total, &mut bases);
        for (payer, amount) in bases {
            if amount == ZERO {
                continue;
            }
            let mut by_market = profits.remove(&payer).unwrap();
            let markets = &self.ledger.markets;
            by_market.sort_by(|a, b| markets[a.0 as usize].id.cmp(&markets[b.0 as usize].id));
            let weight = by_market.iter().fold(ZERO, |total, p| total + p.1);
            split_largest_remainder(amount, weight, &mut by_market);
            let acct = &mut self.ledger.accounts[payer as usize];
            for (market, part) in by_market {
                let at = acct.position_at(market).unwrap();
                acct.positions[at].k -= part;
            }
            self.pay_clawback(payer, account, amount, out, debited);
        }
        taken
    }
}

/// `2 * x` (for the `2E < MM` test).
#[inline]
fn int2(value: Int) -> Int {
    value + value
}

impl crate::ledger::Ledger {
    /// SPEC §9.4's candidates in `market`, best first, at most `keep` of them:
    /// non-system accounts other than `account` and `skip` on the side opposite the
    /// position taken over (`taken_long`), with free margin (E > MM over all their
    /// markets) and profit `u = q*m + K > 0` here; ranked by u/E descending (exact; E > 0
    /// since E - MM > 0), ties by account id. A market held by most of the ledger is
    /// scanned in memory order rather than through its holder set (a cache miss per
    /// holder), and only the best `keep` are held while scanning (no million-entry list).
    fn adl_candidates(
        &self,
        account: u32,
        market: u32,
        taken_long: bool,
        mark: Int,
        keep: usize,
        skip: &rustc_hash::FxHashSet<u32>,
    ) -> Vec<Ranked> {
        let accounts = &self.accounts;
        let before = |a: &Ranked, b: &Ranked| -> bool {
            match compare_ratio((a.profit, a.equity), (b.profit, b.equity)) {
                Ordering::Equal => accounts[a.holder as usize].id < accounts[b.holder as usize].id,
                order => order == Ordering::Greater,
            }
        };
        // With `keep` bounded: a heap whose root is the worst candidate kept.
        let mut kept: Vec<Ranked> = Vec::with_capacity(keep.min(4096));
        let mut consider = |holder: u32| {
            let acct = &accounts[holder as usize];
            if acct.is_system || holder == account {
                return;
            }
            let Some(position) = acct.position(market) else { return };
            if (position.qty > ZERO) == taken_long {
                return; // same side as the position taken over
            }
            let profit = position.qty * mark + position.k;
            if profit <= ZERO {
                return;
            }
            let (equity, maintenance) = self.equity_and_maintenance(holder);
            if equity * E8 <= maintenance || (!skip.is_empty() && skip.contains(&holder)) {
                return;
            }
            let candidate = Ranked { holder, profit, equity };
            if keep == usize::MAX {
                kept.push(candidate);
            } else if kept.len() < keep {
                kept.push(candidate);
                sift_up(&mut kept, &before);
            } else if before(&candidate, &kept[0]) {
                kept[0] = candidate;
                sift_down(&mut kept, &before);
            }
        };
        let holders = &self.markets[market as usize].holders;
        if holders.len() * 4 >= accounts.len() {
            (0..accounts.len() as u32).for_each(&mut consider);
        } else {
            holders.iter().copied().for_each(&mut consider);
        }
        kept.sort_by(|a, b| if before(a, b) { Ordering::Less } else { Ordering::Greater });
        kept
    }
}

/// Restore the worst-at-root heap after a push at the end.
fn sift_up(heap: &mut [Ranked], before: &impl Fn(&Ranked, &Ranked) -> bool) {
    let mut at = heap.len() - 1;
    while at > 0 {
        let parent = (at - 1) / 2;
        if !before(&heap[parent], &heap[at]) {
            break; // the parent is already the worse one
        }
        heap.swap(parent, at);
        at = parent;
    }
}

/// Restore the worst-at-root heap after the root was replaced.
fn sift_down(heap: &mut [Ranked], before: &impl Fn(&Ranked, &Ranked) -> bool) {
    let mut at = 0;
    loop {
        let (left, right) = (2 * at + 1, 2 * at + 2);
        let mut worst = at;
        if left < heap.len() && before(&heap[worst], &heap[left]) {
            worst = left;
        }
        if right < heap.len() && before(&heap[worst], &heap[right]) {
            worst = right;
        }
        if worst == at {
            return;
        }
        heap.swap(at, worst);
        at = worst;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_in::parse_input;

    /// Shorts s0..s29 against one long, some with equal u/E (equal cash and fill price),
    /// in a version-2 ledger at mark 95.
    fn shorts() -> Engine {
        let mut engine = Engine::with_rules(2);
        let mut apply = |raw: String| {
            engine.seq += 1;
            let input = parse_input(raw.as_bytes()).expect("a plain input");
            engine.apply(&input, &mut Vec::new()).expect("applied");
        };
        apply(r#"{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0"}"#.into());
        apply(r#"{"type":"oracle","market":"M","price":"100"}"#.into());
        apply(r#"{"type":"deposit","account":"long","amount":"100000"}"#.into());
        for i in 0..30 {
            apply(format!(r#"{{"type":"deposit","account":"s{i}","amount":"{}"}}"#, 20 + (i % 4) * 5));
            let price = 100 + i % 3;
            apply(format!(
                r#"{{"type":"fill","fill_id":"f{i}","market":"M","price":"{price}","qty":"1","buyer":"long","seller":"s{i}"}}"#
            ));
        }
        apply(r#"{"type":"oracle","market":"M","price":"95"}"#.into());
        engine
    }

    #[test]
    fn the_kept_best_are_the_head_of_the_full_ranking() {
        let engine = shorts();
        let ledger = &engine.ledger;
        let long = ledger.account_handle("long").unwrap();
        let none = rustc_hash::FxHashSet::default();
        let mark = ledger.markets[0].mark();
        let all = ledger.adl_candidates(long, 0, true, mark, usize::MAX, &none);
        assert_eq!(all.len(), 30);
        let ids = |ranked: &[Ranked]| -> Vec<String> {
            ranked.iter().map(|r| ledger.accounts[r.holder as usize].id.to_string()).collect()
        };
        // u/E descending, exactly; equal ratios by id.
        for pair in all.windows(2) {
            let order = compare_ratio((pair[0].profit, pair[0].equity), (pair[1].profit, pair[1].equity));
            assert!(order == Ordering::Greater || (order == Ordering::Equal && ids(&pair[..1]) < ids(&pair[1..])));
        }
        for keep in [1, 3, 7, 29, 30, 31] {
            let kept = ledger.adl_candidates(long, 0, true, mark, keep, &none);
            assert_eq!(ids(&kept), ids(&all[..keep.min(30)]), "keep {keep}");
        }
        // The second scan skips the candidates done.
        let done: rustc_hash::FxHashSet<u32> = all[..5].iter().map(|r| r.holder).collect();
        let rest = ledger.adl_candidates(long, 0, true, mark, usize::MAX, &done);
        assert_eq!(ids(&rest), ids(&all[5..]));
    }
}
