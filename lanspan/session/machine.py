"""The per-peer handshake state machine as a table (h11/h2 style).

Keypair rotation (previous/current/next) and timers live in `table.py`;
this table decides what a handshake-related input does in each state. A
pair missing from the table is a bug in the caller, never a silent no-op.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["TABLE", "HsAction", "HsInput", "HsState", "InvalidTransition", "step"]


class HsState(StrEnum):
    IDLE = "idle"  # no initiation of ours in flight
    INITIATION_SENT = "initiation_sent"  # waiting for a response, retrying


class HsInput(StrEnum):
    WANT_HANDSHAKE = "want_handshake"  # no usable keypair, rekey due, or asked to
    RETRY_TIMER = "retry_timer"  # the retry timeout (backoff + jitter) passed, no response
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"  # REKEY_ATTEMPT_TIME passed in this attempt
    VALID_INITIATION = "valid_initiation"  # authenticated, fresh initiation from the peer
    VALID_RESPONSE = "valid_response"  # authenticated response to our initiation
    VALID_COOKIE = "valid_cookie"  # cookie reply to our initiation
    REMOVE = "remove"  # operator removed the peer
    PEER_CONFIRMED = "peer_confirmed"  # the peer's own handshake (we answered) is confirmed


class HsAction(StrEnum):
    SEND_INITIATION = "send_initiation"  # new ephemeral, new index, new timestamp
    NOTHING = "nothing"  # one initiation in flight at a time
    # Report handshake_failed (once per outage), drop queued payloads, start a new
    # attempt window and send the next initiation: a configured peer is never given up.
    FAIL_AND_RETRY = "fail_and_retry"
    RESPOND = "respond"  # send a response, keep the keypair as `next`
    CONFIRM = "confirm"  # keypair becomes current, flush queue or keepalive
    STORE_COOKIE = "store_cookie"  # mac2 on the next retry
    FORGET = "forget"  # erase keys, indexes and queue
    CANCEL = "cancel"  # keys came from the peer's handshake: stop retrying ours


S, In, A = HsState, HsInput, HsAction

TABLE: dict[tuple[HsState, HsInput], tuple[HsAction, HsState]] = {
    (S.IDLE, In.WANT_HANDSHAKE): (A.SEND_INITIATION, S.INITIATION_SENT),
    (S.IDLE, In.VALID_INITIATION): (A.RESPOND, S.IDLE),
    (S.IDLE, In.REMOVE): (A.FORGET, S.IDLE),
    (S.IDLE, In.PEER_CONFIRMED): (A.NOTHING, S.IDLE),
    (S.INITIATION_SENT, In.WANT_HANDSHAKE): (A.NOTHING, S.INITIATION_SENT),
    (S.INITIATION_SENT, In.RETRY_TIMER): (A.SEND_INITIATION, S.INITIATION_SENT),
    (S.INITIATION_SENT, In.ATTEMPTS_EXHAUSTED): (A.FAIL_AND_RETRY, S.INITIATION_SENT),
    # Both sides initiated at once: answer theirs too; both keypairs end up usable.
    (S.INITIATION_SENT, In.VALID_INITIATION): (A.RESPOND, S.INITIATION_SENT),
    (S.INITIATION_SENT, In.VALID_RESPONSE): (A.CONFIRM, S.IDLE),
    (S.INITIATION_SENT, In.VALID_COOKIE): (A.STORE_COOKIE, S.INITIATION_SENT),
    (S.INITIATION_SENT, In.REMOVE): (A.FORGET, S.IDLE),
    # As WireGuard does: a session confirmed as responder ends our own attempt.
    (S.INITIATION_SENT, In.PEER_CONFIRMED): (A.CANCEL, S.IDLE),
}


class InvalidTransition(RuntimeError):
    """An input that cannot happen in this state: a lanspan bug."""


def step(state: HsState, event: HsInput) -> tuple[HsAction, HsState]:
    try:
        return TABLE[state, event]
    except KeyError:
        raise InvalidTransition(f"{event} in state {state}") from None
