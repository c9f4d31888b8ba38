"""The digest of a prefix cache for engines that name their blocks otherwise (vLLM)."""

from workers.engines.digest import CacheDigest


def test_new_blocks_are_stored_known_ones_refreshed_and_the_oldest_evicted_beyond_the_capacity() -> None:
    told: list[tuple[list[int], list[int]]] = []
    digest = CacheDigest(capacity_blocks=4)
    digest.watch(lambda stored, removed: told.append((list(stored), list(removed))))
    digest.computed([1, 2, 3])
    digest.computed([1, 2, 3])  # nothing new: nothing told
    digest.computed([1, 9])  # 1 refreshed; 9 new
    digest.computed([7, 8])  # six blocks for four places: 2 and 3, the least recently used, go
    assert told == [([1, 2, 3], []), ([9], []), ([7, 8], [2, 3])]
