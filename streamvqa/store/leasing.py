"""`TieredStore`'s side of zero-copy reads (`streamvqa.store.leases` is the reader's side):
`lease` pins blocks in the host tier, promoting cold ones now, and describes their segments;
budgets skip pinned blocks (`BudgetMixin._make_room`) until `release` or the lease expires.

A mixin of `TieredStore` (it works on the store's index, budgets and host tier).
"""

from __future__ import annotations

import time

from streamvqa.store.budgets import NoRoomError
from streamvqa.store.errors import BlockNotFoundError, StoreError
from streamvqa.store.leases import BlockDescriptor, LeaseTable
from streamvqa.store.tiers import HostTier


class LeaseMixin:
    def _init_leases(self) -> None:
        self.leases = LeaseTable()  # public: tests and tools set its clock

    def lease(self, stream_id: str, indices: list[int], ttl_s: float = 30.0) -> list[BlockDescriptor]:
        """Pin blocks in the host tier (promoting cold ones now) and describe where they are, for
        a reader in another process (`streamvqa.store.leases.map_block`). The store does not
        evict them for budget reasons until `release` or the lease expires (``ttl_s``)."""
        self._check_open()
        host = self.tiers[0]
        if not isinstance(host, HostTier):
            raise StoreError("leases need a host (shared-memory) tier as the first tier")
        keys = [self.key(stream_id, i) for i in indices]
        with self._meta:
            for k in keys:
                e = self._index.get(k)
                if e is None or not e.acked:
                    raise BlockNotFoundError(f"block {k.stream_id!r}#{k.index} is not stored")
        lease_id, _ = self.leases.grant(keys, ttl_s)
        expires_at = time.time() + ttl_s
        try:
            out = []
            for k in keys:
                with self._meta:
                    entry = self._index.get(k)
                    warm = entry is not None and 0 in entry.tiers
                if entry is None:
                    raise BlockNotFoundError(f"block {k.stream_id!r}#{k.index} was dropped")
                if not warm:
                    data = self._read_raw(k, entry)
                    try:
                        self._write(0, k, data, entry.gen, sync=False)
                    except NoRoomError as e:
                        raise StoreError(f"host tier is full of leased blocks: {e}") from e
                    with self._meta:
                        self._stats.promotions += 1
                ref = host.segment(k)
                if ref is None:
                    raise BlockNotFoundError(f"block {k.stream_id!r}#{k.index} left the host tier")
                out.append(
                    BlockDescriptor(
                        stream_id=k.stream_id,
                        index=k.index,
                        fingerprint=k.fingerprint,
                        segment=ref.name,
                        offset=ref.offset,
                        length=ref.length,
                        generation=entry.gen,
                        lease_id=lease_id,
                        expires_at=expires_at,
                    )
                )
            return out
        except BaseException:
            self.leases.release(lease_id)
            raise

    def release(self, lease_id: str) -> bool:
        """End a lease early (the reader is done); False if it had already expired."""
        return self.leases.release(lease_id)

    def renew(self, lease_id: str, ttl_s: float = 30.0) -> bool:
        return self.leases.renew(lease_id, ttl_s)
