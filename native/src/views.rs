//! Read views for the daemon's read API: one account, one market, the ranked lists. Each
//! is canonical JSON bytes (keys in code-point order, money as the SPEC's decimal
//! strings), byte-identical to `clearing/engine/_views.py`, which is the reference.

use std::cmp::Ordering;

use crate::engine::{compare_ratio, Engine};
use crate::json_in::write_json_str;
use crate::ledger::Market;
use crate::num::{floor_div, int, write_e16, write_e8, write_scaled, Int, E16, E8, ZERO};

/// e24 amounts (margin requirements) printed in plain notation.
fn write_e24(out: &mut Vec<u8>, value: Int) {
    write_scaled(out, value, 24, E16 * E8)
}

fn write_opt_e8(out: &mut Vec<u8>, value: Option<Int>) {
    match value {
        None => out.extend_from_slice(b"null"),
        Some(v) => {
            out.push(b'"');
            write_e8(out, v);
            out.push(b'"');
        }
    }
}

fn write_str_e8(out: &mut Vec<u8>, value: Int) {
    write_opt_e8(out, Some(value))
}

/// `q * m * 1e8 - |q| * m * mmr` (e24): one position's share of the buffer E - MM.
fn slope(qty: Int, mmr: Int) -> Int {
    if qty > ZERO {
        qty * (E8 - mmr)
    } else {
        qty * (E8 + mmr)
    }
}

/// The mark in this market alone (the others fixed) at which E < MM begins, nearest the
/// current mark, given `rest` = the buffer without this position's term (e24); None when
/// no positive mark gets there. See `_views.liquidation_mark_e8`.
fn liquidation_mark(rest: Int, qty: Int, mmr: Int) -> Option<Int> {
    let s = slope(qty, mmr);
    if qty > ZERO {
        if s == ZERO {
            return None;
        }
        let bound = -floor_div(rest, s) - int(1);
        if bound < int(1) {
            None
        } else {
            Some(bound)
        }
    } else {
        Some(floor_div(rest, -s) + int(1))
    }
}

pub fn account_view(engine: &Engine, id: &str) -> Option<Vec<u8>> {
    let ledger = &engine.ledger;
    let handle = ledger.account_handle(id)?;
    let acct = &ledger.accounts[handle as usize];
    let mut equity = acct.cash;
    let mut im = ZERO;
    let mut mm = ZERO;
    let mut buffer = acct.cash * E8;
    for p in &acct.positions {
        let market = &ledger.markets[p.market as usize];
        let mark = market.mark();
        equity += p.qty * mark;
        im += p.qty.abs() * mark * market.imr;
        mm += p.qty.abs() * mark * market.mmr;
        buffer += mark * slope(p.qty, market.mmr);
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"account\":");
    write_json_str(&mut out, id);
    out.extend_from_slice(b",\"cash\":\"");
    write_e16(&mut out, acct.cash);
    out.extend_from_slice(b"\",\"equity\":\"");
    write_e16(&mut out, equity);
    out.extend_from_slice(b"\",\"initial_margin\":\"");
    write_e24(&mut out, im);
    out.extend_from_slice(b"\",\"maintenance_margin\":\"");
    write_e24(&mut out, mm);
    out.extend_from_slice(b"\",\"positions\":{");
    let mut positions: Vec<_> = acct.positions.iter().collect();
    positions.sort_unstable_by(|a, b| ledger.markets[a.market as usize].id.cmp(&ledger.markets[b.market as usize].id));
    for (n, p) in positions.into_iter().enumerate() {
        let market = &ledger.markets[p.market as usize];
        let mark = market.mark();
        let liquidation = if acct.is_system {
            None
        } else if buffer < ZERO {
            Some(mark)
        } else {
            liquidation_mark(buffer - mark * slope(p.qty, market.mmr), p.qty, market.mmr)
        };
        if n > 0 {
            out.push(b',');
        }
        write_json_str(&mut out, &market.id);
        out.extend_from_slice(b":{\"liquidation_mark\":");
        write_opt_e8(&mut out, liquidation);
        out.extend_from_slice(b",\"mark\":");
        write_str_e8(&mut out, mark);
        out.extend_from_slice(b",\"mark_move\":");
        write_opt_e8(&mut out, liquidation.map(|l| l - mark));
        out.extend_from_slice(b",\"notional\":\"");
        write_e16(&mut out, p.qty * mark);
        out.extend_from_slice(b"\",\"qty\":");
        write_str_e8(&mut out, p.qty);
        out.push(b'}');
    }
    out.extend_from_slice(b"},\"system\":");
    out.extend_from_slice(if acct.is_system { b"true}" } else { b"false}" });
    Some(out)
}

fn write_levels<'a>(out: &mut Vec<u8>, levels: impl Iterator<Item = (Int, Int)> + 'a, depth: usize) {
    out.push(b'[');
    for (n, (price, qty)) in levels.take(depth).enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.push(b'[');
        write_str_e8(out, price);
        out.push(b',');
        write_str_e8(out, qty);
        out.push(b']');
    }
    out.push(b']');
}

/// One market (see `_views.market_view`); under rules version 2 also its volatility
/// estimate, a key a version-1 ledger's answer does not have.
pub fn market_view(engine: &Engine, id: &str, depth: usize) -> Option<Vec<u8>> {
    let ledger = &engine.ledger;
    let index = ledger.market_index(id)?;
    let market: &Market = &ledger.markets[index as usize];
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"ask_levels\":");
    out.extend_from_slice(market.book.asks.len().to_string().as_bytes());
    out.extend_from_slice(b",\"asks\":");
    write_levels(&mut out, market.book.asks.iter().map(|(p, q)| (*p, *q)), depth);
    out.extend_from_slice(b",\"bid_levels\":");
    out.extend_from_slice(market.book.bids.len().to_string().as_bytes());
    out.extend_from_slice(b",\"bids\":");
    write_levels(&mut out, market.book.bids.iter().map(|(key, q)| (-*key, *q)), depth);
    out.extend_from_slice(b",\"held\":");
    write_opt_e8(&mut out, market.held);
    out.extend_from_slice(b",\"holders\":");
    out.extend_from_slice(market.holders.len().to_string().as_bytes());
    out.extend_from_slice(b",\"imr\":");
    write_str_e8(&mut out, market.imr);
    out.extend_from_slice(b",\"liq_fee\":");
    write_str_e8(&mut out, market.liq_fee);
    out.extend_from_slice(b",\"mark\":");
    write_opt_e8(&mut out, market.mark);
    out.extend_from_slice(b",\"market\":");
    write_json_str(&mut out, id);
    out.extend_from_slice(b",\"max_oracle_move\":");
    write_opt_e8(&mut out, market.max_move);
    out.extend_from_slice(b",\"mmr\":");
    write_str_e8(&mut out, market.mmr);
    out.extend_from_slice(b",\"open_interest\":");
    write_str_e8(&mut out, market.long_oi);
    if engine.rules != 1 {
        // The volatility estimate v (SPEC §9.3, e16): version 2 only, the last key.
        out.extend_from_slice(b",\"volatility\":\"");
        write_e16(&mut out, market.v2.vol);
        out.push(b'"');
    }
    out.push(b'}');
    Some(out)
}

/// The `limit` smallest items offered, under a total `order`, in one pass: items go to a
/// buffer of twice the limit, cut back to the limit when full; once cut, an item not
/// smaller than the largest kept is turned away after one comparison.
struct Smallest<T: Copy, F: Fn(&T, &T) -> Ordering> {
    items: Vec<T>,
    limit: usize,
    order: F,
    worst: Option<T>,
}

impl<T: Copy, F: Fn(&T, &T) -> Ordering> Smallest<T, F> {
    fn new(limit: usize, order: F) -> Self {
        Smallest { items: Vec::new(), limit, order, worst: None }
    }

    fn offer(&mut self, item: T) {
        if self.limit == 0 {
            return;
        }
        if let Some(worst) = &self.worst {
            if (self.order)(&item, worst) != Ordering::Less {
                return;
            }
        }
        self.items.push(item);
        if self.items.len() >= 2 * self.limit {
            self.cut();
        }
    }

    fn cut(&mut self) {
        let order = &self.order;
        self.items.select_nth_unstable_by(self.limit - 1, order);
        self.items.truncate(self.limit);
        self.worst = Some(self.items[self.limit - 1]);
    }

    fn finish(mut self) -> Vec<T> {
        if self.items.len() > self.limit {
            self.cut();
        }
        let order = &self.order;
        self.items.sort_unstable_by(order);
        self.items
    }
}

pub fn rankings(engine: &Engine, limit: usize) -> Vec<u8> {
    let ledger = &engine.ledger;
    let id = |handle: u32| &ledger.accounts[handle as usize].id;
    // One pass over every account: its positions to their market's list, its E/MM to
    // the nearest-liquidation list.
    let mut largest: Vec<_> = (0..ledger.markets.len())
        .map(|_| {
            Smallest::new(limit, |a: &(Int, u32), b: &(Int, u32)| {
                b.0.abs().cmp(&a.0.abs()).then_with(|| id(a.1).cmp(id(b.1)))
            })
        })
        .collect();
    let mut nearest = Smallest::new(limit, |a: &(Int, Int, u32), b: &(Int, Int, u32)| {
        compare_ratio((a.0, a.1), (b.0, b.1)).then_with(|| id(a.2).cmp(id(b.2)))
    });
    for (h, acct) in ledger.accounts.iter().enumerate() {
        let mut equity = acct.cash;
        let mut mm = ZERO;
        for p in &acct.positions {
            largest[p.market as usize].offer((p.qty, h as u32));
            let market = &ledger.markets[p.market as usize];
            let mark = market.mark();
            equity += p.qty * mark;
            mm += p.qty.abs() * mark * market.mmr;
        }
        if !acct.is_system && !acct.positions.is_empty() {
            nearest.offer((equity, mm, h as u32));
        }
    }
    let mut largest: Vec<Option<Vec<(Int, u32)>>> = largest.into_iter().map(|top| Some(top.finish())).collect();
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"largest_positions\":{");
    let mut market_handles: Vec<u32> = (0..ledger.markets.len() as u32).collect();
    market_handles.sort_unstable_by(|a, b| ledger.markets[*a as usize].id.cmp(&ledger.markets[*b as usize].id));
    for (n, m) in market_handles.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_json_str(&mut out, &ledger.markets[m as usize].id);
        out.extend_from_slice(b":[");
        let top = largest[m as usize].take().unwrap_or_default();
        for (k, (qty, h)) in top.into_iter().enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"account\":");
            write_json_str(&mut out, id(h));
            out.extend_from_slice(b",\"qty\":");
            write_str_e8(&mut out, qty);
            out.push(b'}');
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"nearest_liquidation\":[");
    for (k, (equity, mm, h)) in nearest.finish().into_iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"account\":");
        write_json_str(&mut out, id(h));
        out.extend_from_slice(b",\"equity\":\"");
        write_e16(&mut out, equity);
        out.extend_from_slice(b"\",\"maintenance_margin\":\"");
        write_e24(&mut out, mm);
        out.extend_from_slice(b"\",\"margin_ratio\":");
        // E/MM floored to 8 decimals: E is e16, MM e24, so E * 1e16 / MM is e8.
        write_str_e8(&mut out, floor_div(equity * E16, mm));
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}
