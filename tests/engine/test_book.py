from __future__ import annotations

from clearing.engine.book import OrderBook

E8 = 10**8


def _book(bids: dict[int, int], asks: dict[int, int]) -> OrderBook:
    book = OrderBook()
    book.replace(
        {p * E8: q * E8 for p, q in bids.items()}, {p * E8: q * E8 for p, q in asks.items()}
    )
    return book


def test_long_sells_into_bids_best_first_and_consumes() -> None:
    book = _book({99: 2, 98: 3, 95: 10}, {})
    # 4 = 2 @ 99 + 2 @ 98
    assert book.close_out(4 * E8, 100 * E8) == (2 * 99 + 2 * 98) * E8 * E8
    assert book.levels()[0] == [(98 * E8, 1 * E8), (95 * E8, 10 * E8)]


def test_beyond_depth_priced_at_worst_level_walked() -> None:
    book = _book({99: 1, 98: 1}, {})
    assert book.close_out(5 * E8, 100 * E8) == (99 + 98 + 3 * 98) * E8 * E8
    assert book.levels()[0] == []
    # Nothing left: the next close-out is priced at the mark.
    assert book.close_out(2 * E8, 100 * E8) == 200 * E8 * E8


def test_short_buys_from_asks_and_proceeds_are_negative() -> None:
    book = _book({}, {101: 1, 103: 5})
    assert book.close_out(-3 * E8, 100 * E8) == -(101 + 2 * 103) * E8 * E8
    assert book.levels()[1] == [(103 * E8, 3 * E8)]


def test_empty_side_uses_mark() -> None:
    book = _book({90: 1}, {})
    assert book.close_out(-2 * E8, 100 * E8) == -200 * E8 * E8
    assert book.levels()[0] == [(90 * E8, 1 * E8)]


def test_replace_restores_depth() -> None:
    book = _book({99: 1}, {})
    book.close_out(1 * E8, 100 * E8)
    book.replace({97 * E8: 2 * E8}, {})
    assert book.levels()[0] == [(97 * E8, 2 * E8)]
