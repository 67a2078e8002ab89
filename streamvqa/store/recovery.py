"""`TieredStore`'s recovery: what survives a restart.

On open, blocks of this model fingerprint already held by durable tiers are re-indexed from
their headers (only the first bytes of each block are read: header + rep keys), oldest first, and
budgets that shrank since the last run are enforced. On close, blocks held only in non-durable
tiers are copied into the first durable tier (``persist_on_close``), most recently used first.

A mixin of `TieredStore` (it works on the store's index, budgets and tiers).
"""

from __future__ import annotations

import logging

from streamvqa.store import format as fmt
from streamvqa.store.budgets import NOBODY
from streamvqa.store.errors import CorruptBlockError, StoreError
from streamvqa.store.index import Entry
from streamvqa.store.keys import BlockKey

log = logging.getLogger("streamvqa.store.tiered")

_HEAD_READ = 64 << 10


class RecoveryMixin:
    def _recover(self) -> None:
        """Re-index blocks of this fingerprint already held by durable tiers (oldest first)."""
        for i, tier in enumerate(self.tiers):
            try:
                found = list(tier.scan(self.fingerprint))
            except (StoreError, OSError) as e:  # down at start: the auditor scans it once it is back
                self._error(i, e)
                self._unscanned.add(i)
                continue
            for key, size in found:
                entry = self._index.get(key)
                if entry is None:
                    entry = self._read_index_entry(i, key, size)
                    if entry is None:
                        continue
                    self._index.add(key, entry)
                    self._stats.recovered += 1
                entry.tiers.add(i)
                self._lru.add(i, key, size)
        if self._spill is not None and self._durable_tier is not None:
            self._recover_spill(self._spill, self._durable_tier)
        for i, tier in enumerate(self.tiers):  # budgets may have shrunk since the last run
            if tier.nbytes() > tier.budget_bytes:
                with self._tier_locks[i]:
                    self._make_room(i, 0, sync=True, keep=NOBODY)

    def index_stream(self, stream_id: str) -> int:
        """Index the stream's blocks that durable tiers hold and this store does not know yet
        (another process wrote them: a replica that died, streamvqa/cluster); returns how many."""
        added = 0
        for i, tier in enumerate(self.tiers):
            if not tier.durable:
                continue
            try:
                found = list(tier.scan(self.fingerprint, stream_id))
            except (StoreError, OSError) as e:
                self._error(i, e)
                continue
            added += self._index_unknown(i, found)
        return added

    def _index_unknown(self, i: int, found: list[tuple[BlockKey, int]], *, oldest: bool = False) -> int:
        """Index the blocks of tier i in `found` that the store does not know (blocks put
        meanwhile win); returns how many. `oldest`: they go to the LRU's old end."""
        added = 0
        for key, size in found:
            with self._meta:
                if key in self._index:
                    continue
            entry = self._read_index_entry(i, key, size)
            if entry is None:
                continue
            with self._meta:
                if key in self._index:
                    continue
                entry.tiers.add(i)
                self._index.add(key, entry)
                self._lru.add(i, key, size, oldest=oldest)
            added += 1
        return added

    def _read_index_entry(self, i: int | str, key: BlockKey, size: int) -> Entry | None:
        """An acknowledged entry for a block found in tier i, from its header and rep keys."""
        tier = self._tier(i)
        try:
            head = tier.read(key, 0, _HEAD_READ)
            if head is None:
                return None
            header = fmt.read_header(head)
            sec = header.sections["rep_keys"]
            need = header.payload_start + sec.offset + sec.nbytes
            if len(head) < need:
                head = tier.read(key, 0, need)
            rep = fmt.decode_section(head, header, "rep_keys", copy=True)
        except CorruptBlockError as e:
            log.warning("unreadable block %s in tier %s at recovery: %s", key, tier.name, e)
            self._stats.corrupt += 1
            return None
        except (StoreError, OSError) as e:
            self._error(i, e)
            return None
        if (header.stream_id, header.index, header.fingerprint) != (
            key.stream_id,
            key.index,
            key.fingerprint,
        ):
            log.warning("block %s in tier %s has a mismatched header; ignored", key, tier.name)
            self._stats.corrupt += 1
            return None
        return Entry(
            gen=next(self._gens),
            size=size,
            t_start=header.t_start,
            t_end=header.t_end,
            rep_keys=rep,
            acked=True,
        )

    def _persist_warm(self) -> None:
        """Copy blocks whose only copies are in non-durable tiers into the first durable tier
        (most recently used first, so the budget keeps the freshest)."""
        d = next((i for i, t in enumerate(self.tiers) if t.durable), None)
        if d is None:
            return
        with self._meta:
            todo = [
                (k, e.gen, i)
                for i in range(d)
                for k in self._lru.newest_first(i)
                if (e := self._index.get(k)) is not None and k not in self._spilled
                and not any(self.tiers[j].durable for j in e.tiers)
            ]
        room = self.tiers[d].budget_bytes
        for key, gen, i in todo:
            data = self.tiers[i].get(key)
            if data is None or len(data) > room:
                continue
            room -= len(data)
            try:
                self._write(d, key, data, gen, sync=True)
            except (StoreError, OSError) as e:
                self._error(d, e)
