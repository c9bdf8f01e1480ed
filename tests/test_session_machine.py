"""Walk every (state, input) pair of the handshake state table."""

from __future__ import annotations

import itertools

import pytest

from lanspan.session.machine import (
    TABLE,
    HsAction,
    HsInput,
    HsState,
    InvalidTransition,
    step,
)

EXPECTED: dict[tuple[HsState, HsInput], tuple[HsAction, HsState]] = {
    (HsState.IDLE, HsInput.WANT_HANDSHAKE): (HsAction.SEND_INITIATION, HsState.INITIATION_SENT),
    (HsState.IDLE, HsInput.VALID_INITIATION): (HsAction.RESPOND, HsState.IDLE),
    (HsState.IDLE, HsInput.REMOVE): (HsAction.FORGET, HsState.IDLE),
    (HsState.IDLE, HsInput.PEER_CONFIRMED): (HsAction.NOTHING, HsState.IDLE),
    (HsState.INITIATION_SENT, HsInput.PEER_CONFIRMED): (HsAction.CANCEL, HsState.IDLE),
    (HsState.INITIATION_SENT, HsInput.WANT_HANDSHAKE): (
        HsAction.NOTHING,
        HsState.INITIATION_SENT,
    ),
    (HsState.INITIATION_SENT, HsInput.RETRY_TIMER): (
        HsAction.SEND_INITIATION,
        HsState.INITIATION_SENT,
    ),
    # Never given up: the queue is dropped, retrying goes on (issue 10).
    (HsState.INITIATION_SENT, HsInput.ATTEMPTS_EXHAUSTED): (
        HsAction.FAIL_AND_RETRY,
        HsState.INITIATION_SENT,
    ),
    (HsState.INITIATION_SENT, HsInput.VALID_INITIATION): (
        HsAction.RESPOND,
        HsState.INITIATION_SENT,
    ),
    (HsState.INITIATION_SENT, HsInput.VALID_RESPONSE): (HsAction.CONFIRM, HsState.IDLE),
    (HsState.INITIATION_SENT, HsInput.VALID_COOKIE): (
        HsAction.STORE_COOKIE,
        HsState.INITIATION_SENT,
    ),
    (HsState.INITIATION_SENT, HsInput.REMOVE): (HsAction.FORGET, HsState.IDLE),
}


@pytest.mark.parametrize(
    ("state", "event"),
    list(itertools.product(HsState, HsInput)),
    ids=lambda v: str(v),
)
def test_every_pair(state: HsState, event: HsInput) -> None:
    if (state, event) in EXPECTED:
        assert step(state, event) == EXPECTED[state, event]
    else:
        with pytest.raises(InvalidTransition):
            step(state, event)


def test_table_has_no_unreviewed_entries() -> None:
    assert TABLE == EXPECTED


def test_every_action_and_state_is_reachable() -> None:
    assert {a for a, _ in TABLE.values()} == set(HsAction)
    assert {s for _, s in TABLE.values()} == set(HsState)
