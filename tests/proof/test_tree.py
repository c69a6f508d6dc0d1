"""The sum tree and its verifier, without a ledger: every tampering is caught, one line."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearing.engine.money import format_e16
from clearing.proof import (
    EMPTY_HASHES,
    PADDING_HASH,
    PathNode,
    Proof,
    ProofInvalid,
    Statement,
    account_salt,
    build_tree,
    leaf_hash,
    make_proof,
    node_hash,
    verify_proof,
)
from clearing.proof._documents import FundFigures, decimal_e16
from clearing.proof._tree import MAX_SUM, SumTree, tree_depth

SEED = b"s" * 32
E16 = 10**16


def _statement(tree: SumTree, seq: int = 7) -> Statement:
    zero = FundFigures("0", "0", "0", "0")
    return Statement(
        encoding="clearing-pol/1",
        hash_function="sha256",
        root_hash=tree.root_hash.hex(),
        total_liabilities_e16=str(tree.total_e16),
        total_liabilities=decimal_e16(tree.total_e16),
        account_count=len(tree.leaves),
        tree_depth=tree.depth,
        seq=seq,
        journal_chain_hash="ab" * 32,
        insurance_fund=zero,
        fee_pool_cash_e16="0",
        fee_pool_cash="0",
        bad_debt_cash_e16="0",
        bad_debt_cash="0",
    )


def _accounts(count: int) -> list[tuple[str, int]]:
    rng = random.Random(count)
    return [(f"acct-{i}", rng.randrange(0, 10**6) * E16 // 7) for i in range(count)]


def _proof_of(tree: SumTree, statement: Statement, account: str) -> Proof:
    index = next(i for i, leaf in enumerate(tree.leaves) if leaf.account_id == account)
    return make_proof(statement, tree, tree.leaves[index], index)


def _failure(proof: Proof, statement: Statement) -> str:
    with pytest.raises(ProofInvalid) as caught:
        verify_proof(proof, statement)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13, 100])
def test_every_account_proof_verifies_and_sums_to_the_total(count: int) -> None:
    accounts = _accounts(count)
    tree = build_tree(SEED, accounts)
    statement = _statement(tree)
    assert tree.total_e16 == sum(liability for _, liability in accounts)
    assert tree.depth == tree_depth(count)
    for account, liability in accounts:
        verified = verify_proof(_proof_of(tree, statement, account), statement)
        assert (verified.account, verified.liability_e16) == (account, liability)
        assert verified.total_e16 == tree.total_e16


def test_leaves_are_ordered_by_hash_not_by_id() -> None:
    tree = build_tree(SEED, _accounts(64))
    hashes = [leaf.hash for leaf in tree.leaves]
    assert hashes == sorted(hashes)
    assert [leaf.account_id for leaf in tree.leaves] != sorted(a for a, _ in _accounts(64))


def test_same_seed_same_root_other_seed_other_root_same_total() -> None:
    accounts = _accounts(50)
    first, again = build_tree(SEED, accounts), build_tree(SEED, list(reversed(accounts)))
    other = build_tree(b"t" * 32, accounts)
    assert first.root_hash == again.root_hash
    assert other.root_hash != first.root_hash
    assert other.total_e16 == first.total_e16


def test_salt_is_hmac_of_the_id_and_the_leaf_binds_id_salt_and_liability() -> None:
    salt = account_salt(SEED, "alice")
    assert salt == account_salt(SEED, "alice") != account_salt(SEED, "alicf")
    assert len(salt) == 32
    base = leaf_hash("alice", salt, 5)
    assert base != leaf_hash("alicf", salt, 5)
    assert base != leaf_hash("alice", account_salt(SEED, "bob"), 5)
    assert base != leaf_hash("alice", salt, 6)
    # The id is length-prefixed: moving bytes between id and salt changes the hash.
    assert leaf_hash("ab", b"c" * 32, 0) != leaf_hash("abc", b"c" * 31 + b"\x00", 0)


@pytest.mark.parametrize("seed", [b"k" * 16, b"s" * 64, bytes(range(200))])
def test_the_built_leaves_are_the_reference_salts_and_hashes(seed: bytes) -> None:
    """build_tree inlines the salt (HMAC from prepared pads) and the leaf hash; both
    must equal the plain definitions, for short and for long (hashed) seeds."""
    tree = build_tree(seed, [*_accounts(30), ("\u00e9t\u00e9", 1)])
    for leaf in tree.leaves:
        assert leaf.salt == account_salt(seed, leaf.account_id)
        assert leaf.hash == leaf_hash(leaf.account_id, leaf.salt, leaf.liability_e16)


def test_a_liability_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        build_tree(SEED, [("a", -1)])
    with pytest.raises(ValueError, match="out of range"):
        build_tree(SEED, [("a", MAX_SUM + 1)])
    with pytest.raises(ValueError):
        build_tree(SEED, [("a", MAX_SUM), ("b", 1)])  # the total would not fit


def test_padding_is_a_distinct_public_constant() -> None:
    assert EMPTY_HASHES[0] == PADDING_HASH
    assert EMPTY_HASHES[1] == node_hash(PADDING_HASH, 0, PADDING_HASH, 0)
    # No account leaf, even of liability 0, hashes to the padding constant.
    assert leaf_hash("", b"\x00" * 32, 0) != PADDING_HASH


def test_node_hash_binds_each_child_sum_not_only_their_total() -> None:
    left, right = b"\x01" * 32, b"\x02" * 32
    assert node_hash(left, 10, right, 5) != node_hash(left, 5, right, 10)
    with pytest.raises(ValueError):
        node_hash(left, -1, right, 16)
    with pytest.raises(ValueError):
        node_hash(left, MAX_SUM + 1, right, 0)


@pytest.fixture(scope="module")
def tree() -> SumTree:
    return build_tree(SEED, _accounts(13))


def _with_path(proof: Proof, level: int, **change: str) -> Proof:
    path = list(proof.path)
    path[level] = msgspec.structs.replace(path[level], **change)
    return msgspec.structs.replace(proof, path=path)


def test_tampered_leaf_is_caught(tree: SumTree) -> None:
    statement = _statement(tree)
    proof = _proof_of(tree, statement, "acct-3")
    raised = int(proof.liability_e16) + E16
    assert "does not lead to the statement's root" in _failure(
        msgspec.structs.replace(proof, liability_e16=str(raised), liability=decimal_e16(raised)),
        statement,
    )
    # The decimal written for people must match the exact amount.
    assert "reads" in _failure(msgspec.structs.replace(proof, liability="1000000"), statement)
    assert "does not lead to the statement's root" in _failure(
        msgspec.structs.replace(proof, account="acct-4"), statement
    )
    assert "salt" in _failure(msgspec.structs.replace(proof, salt="00"), statement)


def test_changed_sibling_sum_is_caught(tree: SumTree) -> None:
    statement = _statement(tree)
    proof = _proof_of(tree, statement, "acct-5")
    lowered = str(int(proof.path[1].sum_e16) - 1)
    assert "does not lead to the statement's root" in _failure(
        _with_path(proof, 1, sum_e16=lowered), statement
    )


def test_moving_value_between_siblings_is_caught(tree: SumTree) -> None:
    """Maxwell's original flaw: with only the total hashed, a user could be shown a
    smaller sibling sum and a matching larger own one. Here both sums are bound."""
    statement = _statement(tree)
    proof = _proof_of(tree, statement, "acct-6")
    lowered = int(proof.liability_e16) - 1
    shifted = msgspec.structs.replace(
        _with_path(proof, 0, sum_e16=str(int(proof.path[0].sum_e16) + 1)),
        liability_e16=str(lowered),
        liability=decimal_e16(lowered),
    )
    assert "does not lead to the statement's root" in _failure(shifted, statement)


def test_changed_total_is_caught(tree: SumTree) -> None:
    lowered = tree.total_e16 - 1
    statement = msgspec.structs.replace(
        _statement(tree), total_liabilities_e16=str(lowered), total_liabilities=decimal_e16(lowered)
    )
    message = _failure(_proof_of(tree, statement, "acct-0"), statement)
    assert "the statement's total is" in message
    mislabelled = msgspec.structs.replace(_statement(tree), total_liabilities="1")
    assert "the statement's total_liabilities reads '1'" in _failure(
        _proof_of(tree, mislabelled, "acct-0"), mislabelled
    )


def test_negative_node_is_caught(tree: SumTree) -> None:
    statement = _statement(tree)
    proof = _proof_of(tree, statement, "acct-2")
    assert "negative" in _failure(_with_path(proof, 2, sum_e16="-5"), statement)
    negative = msgspec.structs.replace(proof, liability_e16="-1", liability="-0.0000000000000001")
    assert "negative" in _failure(negative, statement)
    assert "not an integer" in _failure(_with_path(proof, 0, sum_e16="1.5"), statement)


def test_padding_sibling_carrying_value_is_caught(tree: SumTree) -> None:
    """13 accounts in 16 leaves: the top-level right subtree holds accounts 8..15, of
    which 13..15 are padding; the leaf 12's level-0 sibling is leaf 13, padding."""
    statement = _statement(tree)
    proof = make_proof(statement, tree, tree.leaves[12], 12)
    assert proof.path[0] == PathNode(PADDING_HASH.hex(), "0")
    forged = _with_path(proof, 0, sum_e16="1")
    assert "padding" in _failure(forged, statement)


def test_omitted_account_is_caught() -> None:
    accounts = _accounts(20)
    honest = build_tree(SEED, accounts)
    omitting = build_tree(SEED, [a for a in accounts if a[0] != "acct-11"])
    statement = _statement(omitting)
    proof = _proof_of(honest, _statement(honest), "acct-11")
    assert "another statement" in _failure(proof, statement)
    # Even with the count made to match, the path leads elsewhere.
    forged = msgspec.structs.replace(
        proof, account_count=statement.account_count, root_hash=statement.root_hash
    )
    assert "does not lead to the statement's root" in _failure(forged, statement)


def test_proof_against_another_statement_is_caught(tree: SumTree) -> None:
    proof = _proof_of(tree, _statement(tree, seq=7), "acct-1")
    message = _failure(proof, _statement(tree, seq=8))
    assert "another statement" in message
    assert "seq" in message


def test_wrong_path_length_and_index_are_caught(tree: SumTree) -> None:
    statement = _statement(tree)
    proof = _proof_of(tree, statement, "acct-1")
    short = msgspec.structs.replace(proof, path=proof.path[:-1])
    assert "levels" in _failure(short, statement)
    assert "outside" in _failure(msgspec.structs.replace(proof, leaf_index=13), statement)
    huge = {"account_count": 1 << 70, "tree_depth": 70}
    assert "outside 1..2^63" in _failure(
        msgspec.structs.replace(proof, account_count=1 << 70, path=proof.path * 20),
        msgspec.structs.replace(statement, **huge),
    )


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**30), min_size=1, max_size=40))
def test_random_trees_verify_for_every_account(liabilities: list[int]) -> None:
    accounts = [(f"a{i}", amount) for i, amount in enumerate(liabilities)]
    tree = build_tree(SEED, accounts)
    statement = _statement(tree)
    for index, leaf in enumerate(tree.leaves):
        assert verify_proof(make_proof(statement, tree, leaf, index), statement).liability_e16 == (
            leaf.liability_e16
        )
    assert tree.total_e16 == sum(liabilities)


@given(st.integers(min_value=-(10**40), max_value=10**40))
def test_the_documents_decimals_are_the_ledgers(amount_e16: int) -> None:
    assert decimal_e16(amount_e16) == format_e16(amount_e16)


def test_a_proof_names_no_other_account_and_shows_no_other_salt(tree: SumTree) -> None:
    statement = _statement(tree)
    proof = make_proof(statement, tree, tree.leaves[4], 4)
    text = msgspec.json.encode(proof)
    for leaf in tree.leaves:
        if leaf.account_id != proof.account:
            assert msgspec.json.encode(leaf.account_id) not in text  # quoted: "a-1" vs "a-10"
            assert leaf.salt.hex().encode() not in text
    assert set(PathNode.__struct_fields__) == {"hash", "sum_e16"}


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(Proof.__struct_fields__)), _json_values, st.integers(0, 3))
def test_a_hostile_field_fails_cleanly_and_only_the_true_proof_verifies(
    field: str, value: object, level: int
) -> None:
    tree = build_tree(SEED, _accounts(13))
    statement = _statement(tree)
    proof = _proof_of(tree, statement, "acct-7")
    document = msgspec.to_builtins(proof)
    if field == "path" and isinstance(value, list) and value:
        document["path"][level] = value  # one sibling replaced
    else:
        document[field] = value
    try:
        hostile = msgspec.convert(document, Proof)
    except msgspec.ValidationError:
        return  # the CLI says the file is not a proof (exit 2)
    try:
        verify_proof(hostile, statement)
    except ProofInvalid as error:
        assert "\n" not in str(error)
        return
    assert hostile == proof


def test_the_verifier_raises_the_error_tree_s_class() -> None:
    import clearing.errors
    import clearing.proof

    assert clearing.proof.ProofInvalid is clearing.errors.ProofInvalid
    assert issubclass(ProofInvalid, clearing.errors.ClearingError)


@pytest.mark.parametrize("field", ["journal_chain_hash", "root_hash"])
def test_a_newline_in_a_compared_field_still_gives_one_line(tree: SumTree, field: str) -> None:
    """A verdict quotes the mismatching values; a file may put anything there (the
    hypothesis test above found a bare newline in ``journal_chain_hash``)."""
    statement = _statement(tree)
    proof = msgspec.structs.replace(_proof_of(tree, statement, "acct-1"), **{field: "\n"})
    message = _failure(proof, statement)
    assert "another statement" in message and "\n" not in message
