"""Errors raised by the block store and its tiers."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every block-store error."""


class CorruptBlockError(StoreError):
    """Encoded block bytes fail validation: bad magic, truncation, checksum or header mismatch."""


class UnsupportedVersionError(CorruptBlockError):
    """The block was written in a format version this code cannot read."""


class BlockNotFoundError(StoreError, KeyError):
    """No tier holds the block (never written, dropped by eviction, or its only copy was corrupt)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "block not found"


class StoreFullError(StoreError):
    """The write-behind queue stayed full longer than the configured put timeout."""


class TierUnavailableError(StoreError):
    """A tier's backend (Redis, disk) failed an operation; the store degrades around it."""
