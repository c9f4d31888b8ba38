"""The prefix index: which worker holds which blocks, from cache events or from placements."""

from workers.scheduler.prefixes import PrefixIndex


def test_a_match_is_the_run_of_blocks_held_from_the_start() -> None:
    index = PrefixIndex()
    index.stored("a", "m", [1, 2, 3, 4])
    index.stored("b", "m", [1, 2])
    index.stored("c", "m", [2, 3, 4])  # the middle of a prompt without its start is of no use
    assert index.matches("m", [1, 2, 3, 4, 5]) == {"a": 4, "b": 2}
    assert index.matches("m", [9, 2, 3]) == {}
    assert index.matches("other", [1, 2]) == {}
    assert index.matches("m", []) == {}


def test_an_evicted_block_cuts_the_match_there() -> None:
    index = PrefixIndex()
    index.stored("a", "m", [1, 2, 3, 4])
    index.removed("a", "m", [3])
    assert index.matches("m", [1, 2, 3, 4]) == {"a": 2}
    index.removed("a", "m", [1, 99])  # a block never stored: nothing to do
    index.removed("nobody", "m", [1])
    assert index.matches("m", [1, 2, 3, 4]) == {}


def test_a_worker_gone_holds_nothing() -> None:
    index = PrefixIndex()
    index.stored("a", "m", [1, 2])
    index.stored("b", "m", [1, 2])
    index.forget("a")
    assert index.matches("m", [1, 2]) == {"b": 2}
    assert index.blocks_of("a") == 0


def test_remembered_placements_are_bounded_per_worker_oldest_forgotten_first() -> None:
    index = PrefixIndex(capacity=4)
    index.remember("a", "m", [1, 2, 3])
    index.remember("a", "m", [7, 8])  # five blocks for four places: block 1 goes
    assert index.blocks_of("a") == 4
    assert index.matches("m", [1, 2, 3]) == {}
    assert index.matches("m", [7, 8]) == {"a": 2}
    index.remember("a", "m", [2, 3])  # used again: now the most recent
    index.remember("a", "m", [5])
    assert index.matches("m", [7]) == {} and index.matches("m", [8]) == {"a": 1}
