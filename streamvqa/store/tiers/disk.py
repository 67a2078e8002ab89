"""Cold tier on local disk: one file per block, written to a temporary name then renamed.

Layout: ``{path}/{fingerprint}/{quoted stream id}/{index:010d}.blk``. A write goes to
``….blk.tmp-{pid}-{n}`` and is `os.replace`d into place, so a reader never sees a partial block
and a crash leaves at most a temp file, removed at the next start-up. With ``fsync=True`` the file
and its directory are fsynced before the rename/return (survives power loss, not only a process
crash). The tier re-indexes existing ``.blk`` files on start-up; content is verified (checksum)
when a block is read, not when it is indexed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from pathlib import Path

from streamvqa.store.block import Block
from streamvqa.store.config import DiskTierConfig
from streamvqa.store.keys import BlockKey, quote_stream, unquote_stream
from streamvqa.store.tiers.base import Data, SizeLedger, as_buffer, as_data

_SUFFIX = ".blk"
_TMP = ".tmp-"


class DiskTier(SizeLedger):
    durable = True

    def __init__(self, config: DiskTierConfig) -> None:
        super().__init__()
        self.config = config
        self.name = config.name
        self.budget_bytes = config.budget_bytes
        self.root = Path(config.path)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._found: list[tuple[float, BlockKey, int]] = []
        self._tmp_ids = itertools.count()
        self.removed_temp_files = 0
        self._reindex()

    # -- paths -----------------------------------------------------------------------------
    def path_of(self, key: BlockKey) -> Path:
        return self.root / key.fingerprint / quote_stream(key.stream_id) / f"{key.index:010d}{_SUFFIX}"

    def _reindex(self) -> None:
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                full = os.path.join(dirpath, f)
                if _TMP in f:
                    os.unlink(full)  # a write that never reached its rename: never acknowledged
                    self.removed_temp_files += 1
                    continue
                if not f.endswith(_SUFFIX):
                    continue
                rel = os.path.relpath(full, self.root).split(os.sep)
                if len(rel) != 3:
                    continue
                try:
                    key = BlockKey(rel[0], unquote_stream(rel[1]), int(rel[2][: -len(_SUFFIX)]))
                    st = os.stat(full)
                except (ValueError, OSError):
                    continue
                self.record(key, st.st_size)
                self._found.append((st.st_mtime, key, st.st_size))
        self._found.sort()

    # -- Tier ------------------------------------------------------------------------------
    def put(self, key: BlockKey, data: Data | Block) -> int:
        data = as_data(key, data)
        path = self.path_of(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f"{path.name}{_TMP}{os.getpid()}-{next(self._tmp_ids)}")
        buf = memoryview(as_buffer(data)).cast("B")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                written = 0
                while written < len(buf):
                    written += os.write(fd, buf[written:])
                if self.config.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        if self.config.fsync:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self.record(key, len(buf))
        return len(buf)

    def get(self, key: BlockKey) -> bytearray | None:
        try:
            with open(self.path_of(key), "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                buf = bytearray(size)
                n, mv = 0, memoryview(buf)
                while n < size:
                    got = f.readinto(mv[n:])
                    if not got:
                        break
                    n += got
                return buf if n == size else buf[:n]
        except FileNotFoundError:
            return None

    def get_many(self, keys: list[BlockKey]) -> list[bytearray | None]:
        return [self.get(k) for k in keys]

    def read(self, key: BlockKey, offset: int, length: int) -> bytes | None:
        try:
            with open(self.path_of(key), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            return None

    def delete(self, key: BlockKey) -> bool:
        try:
            os.unlink(self.path_of(key))
        except FileNotFoundError:
            pass
        return self.forget([key]) == 1

    def scan(self, fingerprint: str, stream_id: str | None = None) -> Iterable[tuple[BlockKey, int]]:
        return [
            (k, size) for _mtime, k, size in self._found
            if k.fingerprint == fingerprint and stream_id in (None, k.stream_id) and self.contains(k)
        ]

    def ping(self) -> bool:
        """The directory exists and is writable."""
        return self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)

    def close(self) -> None:
        pass
