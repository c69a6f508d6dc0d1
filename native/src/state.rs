//! Views of the native ledger: the SPEC §8 state JSON, the snapshot document (both ways),
//! and the figures metrics and reports read.

use compact_str::CompactString;

use crate::engine::Engine;
use crate::json_in::write_json_str;
use crate::ledger::{Ledger, Market, FUND};
use crate::num::{write_e16, write_e8, Int, ZERO};
use crate::snapshot::{AccountDoc, MarketDoc, PositionDoc, StateDoc, STATE_FORMAT_VERSION};

fn sorted_accounts(ledger: &Ledger) -> Vec<u32> {
    let mut handles: Vec<u32> = (0..ledger.accounts.len() as u32).collect();
    handles.sort_unstable_by(|a, b| ledger.accounts[*a as usize].id.cmp(&ledger.accounts[*b as usize].id));
    handles
}

fn sorted_markets(ledger: &Ledger) -> Vec<u32> {
    let mut handles: Vec<u32> = (0..ledger.markets.len() as u32).collect();
    handles.sort_unstable_by(|a, b| ledger.markets[*a as usize].id.cmp(&ledger.markets[*b as usize].id));
    handles
}

/// `{"accounts":{ID:{"cash":..,"positions":{M:q}}},"markets":{M:{"mark":..|null}}}`, keys in
/// code-point order, exactly as `msgspec.json.encode(Engine.state())`.
pub fn state_json(engine: &Engine) -> Vec<u8> {
    let ledger = &engine.ledger;
    let mut out = Vec::with_capacity(64 + ledger.accounts.len() * 64);
    out.extend_from_slice(b"{\"accounts\":{");
    for (n, handle) in sorted_accounts(ledger).into_iter().enumerate() {
        let acct = &ledger.accounts[handle as usize];
        if n > 0 {
            out.push(b',');
        }
        write_json_str(&mut out, &acct.id);
        out.extend_from_slice(b":{\"cash\":\"");
        write_e16(&mut out, acct.cash);
        out.extend_from_slice(b"\",\"positions\":{");
        let mut positions: Vec<&crate::ledger::Position> = acct.positions.iter().collect();
        positions
            .sort_unstable_by(|a, b| ledger.markets[a.market as usize].id.cmp(&ledger.markets[b.market as usize].id));
        for (m, p) in positions.into_iter().enumerate() {
            if m > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, &ledger.markets[p.market as usize].id);
            out.extend_from_slice(b":\"");
            write_e8(&mut out, p.qty);
            out.push(b'"');
        }
        out.extend_from_slice(b"}}");
    }
    out.extend_from_slice(b"},\"markets\":{");
    for (n, handle) in sorted_markets(ledger).into_iter().enumerate() {
        let market = &ledger.markets[handle as usize];
        if n > 0 {
            out.push(b',');
        }
        write_json_str(&mut out, &market.id);
        match market.mark {
            None => out.extend_from_slice(b":{\"mark\":null}"),
            Some(mark) => {
                out.extend_from_slice(b":{\"mark\":\"");
                write_e8(&mut out, mark);
                out.extend_from_slice(b"\"}");
            }
        }
    }
    out.extend_from_slice(b"}}");
    out
}

pub fn to_doc(engine: &Engine) -> StateDoc {
    let ledger = &engine.ledger;
    let accounts = sorted_accounts(ledger)
        .into_iter()
        .map(|handle| {
            let acct = &ledger.accounts[handle as usize];
            let mut positions: Vec<PositionDoc> = acct
                .positions
                .iter()
                .map(|p| PositionDoc {
                    market: ledger.markets[p.market as usize].id.to_string(),
                    qty_e8: p.qty.0,
                    k_e16: p.k.0,
                })
                .collect();
            positions.sort_unstable_by(|a, b| a.market.cmp(&b.market));
            AccountDoc { id: acct.id.to_string(), cash_e16: acct.cash.0, positions }
        })
        .collect();
    let markets = sorted_markets(ledger)
        .into_iter()
        .map(|handle| {
            let m = &ledger.markets[handle as usize];
            MarketDoc {
                id: m.id.to_string(),
                imr_e8: m.imr.0,
                mmr_e8: m.mmr.0,
                liq_fee_e8: m.liq_fee.0,
                max_oracle_move_e8: m.max_move.map(|v| v.0),
                mark_e8: m.mark.map(|v| v.0),
                oracle_seen: m.oracle_seen,
                held_e8: m.held.map(|v| v.0),
                bids: m.book.bids.iter().map(|(key, qty)| ((-*key).0, qty.0)).collect(),
                asks: m.book.asks.iter().map(|(price, qty)| (price.0, qty.0)).collect(),
            }
        })
        .collect();
    let mut fill_ids: Vec<String> = ledger.fill_ids.iter().map(|id| id.to_string()).collect();
    fill_ids.sort_unstable();
    StateDoc {
        version: STATE_FORMAT_VERSION,
        seq: engine.seq,
        net_deposits_e16: ledger.net_deposits.0,
        accounts,
        markets,
        fill_ids,
    }
}

pub fn from_doc(doc: StateDoc) -> Result<Engine, String> {
    if doc.version != STATE_FORMAT_VERSION {
        return Err(format!("state format version {}; this build reads {STATE_FORMAT_VERSION}", doc.version));
    }
    let mut engine = Engine::new();
    engine.seq = doc.seq;
    let ledger = &mut engine.ledger;
    ledger.net_deposits = Int(doc.net_deposits_e16);
    for rec in doc.markets {
        if ledger.market_ids.contains_key(rec.id.as_str()) {
            return Err(format!("not an engine state: market {:?} listed twice", rec.id));
        }
        let mut market = Market::new(
            &rec.id,
            Int(rec.imr_e8),
            Int(rec.mmr_e8),
            Int(rec.liq_fee_e8),
            rec.max_oracle_move_e8.map(Int),
        );
        market.mark = rec.mark_e8.map(Int);
        market.oracle_seen = rec.oracle_seen;
        market.held = rec.held_e8.map(Int);
        for (price, qty) in rec.bids {
            market.book.bids.insert(-Int(price), Int(qty));
        }
        for (price, qty) in rec.asks {
            market.book.asks.insert(Int(price), Int(qty));
        }
        let index = ledger.markets.len() as u32;
        ledger.market_ids.insert(rec.id.as_str().into(), index);
        ledger.markets.push(market);
    }
    // Size every table once: growing them a million entries at a time was a third of
    // the load.
    ledger.reserve_accounts(doc.accounts.len());
    let mut per_market = vec![0usize; ledger.markets.len()];
    for rec in &doc.accounts {
        for pos in &rec.positions {
            if let Some(market) = ledger.market_index(&pos.market) {
                per_market[market as usize] += 1;
            }
        }
    }
    for (market, count) in ledger.markets.iter_mut().zip(per_market) {
        market.holders.reserve(count);
    }
    for rec in doc.accounts {
        let handle = ledger.account(&rec.id);
        ledger.accounts[handle as usize].cash = Int(rec.cash_e16);
        for pos in rec.positions {
            let Some(market) = ledger.market_index(&pos.market) else {
                return Err(format!("not an engine state: position in unknown market {:?}", pos.market));
            };
            if pos.qty_e8 == ethnum::I256::ZERO || ledger.markets[market as usize].mark.is_none() {
                return Err(format!("not an engine state: bad position of {:?} in {:?}", rec.id, pos.market));
            }
            ledger.set_position(handle, market, Int(pos.qty_e8), Int(pos.k_e16));
        }
    }
    ledger.fill_ids.reserve(doc.fill_ids.len());
    for id in doc.fill_ids {
        ledger.fill_ids.insert(CompactString::from(id));
    }
    ledger.recount();
    ledger.build_index();
    Ok(engine)
}

pub type MarketFigures = (String, String, Option<String>);

/// (accounts, positions, fund equity e16, per market in id order: long open interest e8
/// and mark e8) as decimal strings.
pub fn summary(engine: &Engine) -> (usize, usize, String, Vec<MarketFigures>) {
    let ledger = &engine.ledger;
    let mut long_oi = vec![ZERO; ledger.markets.len()];
    let mut positions = 0;
    for acct in &ledger.accounts {
        positions += acct.positions.len();
        for p in &acct.positions {
            if p.qty > ZERO {
                long_oi[p.market as usize] += p.qty;
            }
        }
    }
    let fund_equity = ledger.equity(FUND);
    let markets = sorted_markets(ledger)
        .into_iter()
        .map(|m| {
            let market = &ledger.markets[m as usize];
            (market.id.to_string(), long_oi[m as usize].to_string(), market.mark.map(|v| v.to_string()))
        })
        .collect();
    (ledger.accounts.len(), positions, fund_equity.to_string(), markets)
}

/// What the metrics read off the ledger, in one O(positions) pass: the figures
/// `clearing.ops.metrics.Metrics.update_ledger` computes from the Python ledger.
pub struct Figures {
    pub accounts: usize,
    pub fund_cash: Int,
    pub fund_equity: Int,
    pub fee_pool_cash: Int,
    pub bad_debt_cash: Int,
    /// Per market in id order: id, long open interest e8, mark e8, a tick held back.
    pub markets: Vec<(String, Int, Option<Int>, bool)>,
    /// Non-system accounts holding a position, and those of them below initial margin.
    pub traders: usize,
    pub below_im: usize,
}

pub fn figures(engine: &Engine) -> Figures {
    let ledger = &engine.ledger;
    let mut long_oi = vec![ZERO; ledger.markets.len()];
    let mut traders = 0;
    let mut below_im = 0;
    for (handle, acct) in ledger.accounts.iter().enumerate() {
        for p in &acct.positions {
            if p.qty > ZERO {
                long_oi[p.market as usize] += p.qty;
            }
        }
        if !acct.is_system && !acct.positions.is_empty() {
            traders += 1;
            let handle = handle as u32;
            if ledger.equity(handle) * crate::num::E8 < ledger.initial_requirement(handle) {
                below_im += 1;
            }
        }
    }
    let markets = sorted_markets(ledger)
        .into_iter()
        .map(|m| {
            let market = &ledger.markets[m as usize];
            (market.id.to_string(), long_oi[m as usize], market.mark, market.held.is_some())
        })
        .collect();
    Figures {
        accounts: ledger.accounts.len(),
        fund_cash: ledger.accounts[FUND as usize].cash,
        fund_equity: ledger.equity(FUND),
        fee_pool_cash: ledger.accounts[crate::ledger::FEES as usize].cash,
        bad_debt_cash: ledger.accounts[crate::ledger::DEBT as usize].cash,
        markets,
        traders,
        below_im,
    }
}
