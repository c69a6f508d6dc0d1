//! A market's order book as the close-outs price it (`clearing/engine/book.py`).

use std::collections::BTreeMap;

use crate::num::{int, Int, ZERO};

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
