"""A remote object as the file h5py opens: seekable, read-only, errno kept."""
from __future__ import annotations

import io

from ..io.remote_object import RemoteObject
from .metadata_readahead import MetadataReadahead


class RemoteFile(io.RawIOBase):
    """A seekable, read-only file object over a RemoteObject, for ``h5py.File``.

    h5py swallows the errno of exceptions raised here, so the last one is kept in
    ``last_error`` for the caller to re-raise with its errno intact.  Misses go
    through ``MetadataReadahead``, which widens clustered ones.
    """

    def __init__(self, obj: RemoteObject) -> None:
        super().__init__()
        obj.probe()
        self.obj = obj
        self.pos = 0
        self.last_error: OSError | None = None
        self.readahead = MetadataReadahead()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self.pos = offset
        elif whence == io.SEEK_CUR:
            self.pos += offset
        elif whence == io.SEEK_END:
            self.pos = self.obj.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        size = len(buffer)
        try:
            if self.obj.peek(self.pos, self.pos + size) is None:
                _, stop = self.readahead.on_miss(self.pos, self.pos + size)
                if stop > self.pos + size:
                    self.obj.prefetch(self.pos, stop)
            else:
                ahead = self.readahead.on_hit(self.pos)
                if ahead is not None:
                    self.obj.prefetch(*ahead)
            data = self.obj.read(self.pos, self.pos + size)
        except OSError as exc:
            self.last_error = exc
            raise
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)
