"""Shares (forward_auth/worker.py): the counts the workers of the built-in server compare, and
when each was last renewed; a clock of the test's own stands in for the system's."""

from __future__ import annotations

from conftest import ManualClock

from forward_auth.worker import STALE_SECONDS, Shares


def test_a_sibling_is_left_out_once_its_count_is_stale_and_counts_again_when_renewed() -> None:
    clock = ManualClock()
    shares = Shares(3, clock)
    shares.hold(0, 4)
    shares.hold(1, 1)
    assert shares.yields(0, 4) and shares.surplus(0, 4) == 1
    clock.now += STALE_SECONDS - 0.1
    assert shares.yields(0, 4)  # renewed 2.9 s ago: still a sibling
    clock.now += 0.2
    assert not shares.yields(0, 4) and shares.surplus(0, 4) == 0  # 3.1 s: left out
    shares.hold(1, 1)  # its tick renews it
    assert shares.yields(0, 4) and shares.surplus(0, 4) == 1


def test_a_slot_never_held_or_released_is_no_sibling() -> None:
    shares = Shares(3, ManualClock())
    shares.hold(0, 4)
    assert not shares.yields(0, 4)  # slots 1 and 2: -1 since the start
    shares.hold(1, 0)
    assert shares.yields(0, 4)
    shares.release(1)
    assert not shares.yields(0, 4) and shares.surplus(0, 4) == 0
