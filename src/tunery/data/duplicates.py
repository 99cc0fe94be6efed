"""Which items repeat an earlier one, by 64-bit hash, in ~3 bytes an item instead of a set's ~80.

A set of Python ints costs an int object and a hash-table slot per item (100,000 rows: ~9 MB,
held through the whole first pass). Here each hash goes into an `array` (8 bytes) and sets one
bit of a fixed 1 MB bitmap indexed by its low bits; only a hash whose bit was already set can be
a repeat, and those few candidates (a repeat, or a bitmap collision: ~1% at 100,000 items) are
settled exactly by one pass over the array at the end.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

BITS = 23  # 2**23 bits = 1 MB


class Duplicates:
    def __init__(self) -> None:
        self.hashes = array("q")
        self.bitmap = bytearray(1 << (BITS - 3))
        self.candidates: set[int] = set()

    def __len__(self) -> int:
        return len(self.hashes)

    def add_many(self, hashes: Iterable[int]) -> None:
        """Append items (their `hash()` values), in order."""
        hashes = list(hashes)
        bitmap, candidates, mask = self.bitmap, self.candidates, (1 << BITS) - 1
        for h in hashes:
            i = h & mask
            bit = 1 << (i & 7)
            if bitmap[i >> 3] & bit:
                candidates.add(h)
            else:
                bitmap[i >> 3] |= bit
        self.hashes.extend(hashes)

    def repeats(self) -> Iterator[int]:
        """Indices (in the order added) of the items whose hash occurred at an earlier index."""
        candidates = self.candidates
        if not candidates:
            return
        seen: set[int] = set()
        for k, h in enumerate(self.hashes):
            if h in candidates:
                if h in seen:
                    yield k
                else:
                    seen.add(h)
