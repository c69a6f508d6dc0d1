"""Which rules version a ledger runs (SPEC §9): one decision for every journal kind."""

from __future__ import annotations


class RulesVersionConflict(ValueError):
    """A caller asked for other rules than the journal records; each journal kind words
    the refusal for its own operator (a directory, a topic)."""

    def __init__(self, recorded: int, requested: int) -> None:
        super().__init__(f"journal records rules version {recorded}, not {requested}")
        self.recorded = recorded
        self.requested = requested


def settle_rules_version(recorded: int | None, requested: int | None) -> int:
    """The rules version a ledger runs: the one its journal ``recorded``, or for an empty
    journal (``recorded`` None: a new ledger) the ``requested`` one (unset: 1). Raises
    ``RulesVersionConflict`` when a version is requested that differs from the recorded
    one: a ledger's rules never change, and replaying it under others would diverge."""
    if recorded is None:
        return requested or 1
    if requested is not None and requested != recorded:
        raise RulesVersionConflict(recorded, requested)
    return recorded
