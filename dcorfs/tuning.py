"""Every tuning value of the mount, in one place, each with what it trades.

Values that a format or a protocol fixes (HDF5 field sizes, CKAN's 1,000 rows per
search) stay beside the code that reads them; the readahead of feature reads has its
own documented config (``hdf5.readahead.ReadaheadConfig``).  ``TUNING`` is what the
mount uses; tests may pass a ``dataclasses.replace``-d copy where a part takes one.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Tuning:
    # -- threads and connections ---------------------------------------------------------
    #: the pool for decodes and listing tasks (they may wait for fetches, so it is larger
    #: than the cores)
    decode_workers: int = 16
    #: seconds without a request after which opening a resource first reopens store
    #: connections (servers close idle ones: S3 after about 20 s, nginx after 75 s)
    reopen_after: float = 5.0
    #: seconds "not found" is remembered (a resource id, a dataset name); errors never are
    negative_ttl: float = 30.0

    # -- listings ------------------------------------------------------------------------
    #: ``st_blksize`` of files and folders: glibc's opendir sizes its getdents buffer by
    #: it (32 KiB to 1 MiB), and the kernel asks FUSE for as many names as that holds
    blksize: int = 1024 * 1024
    #: names a listing takes from its folder at a time with attributes (the kernel takes
    #: a few dozen entries per call) and without (it takes thousands)
    readdir_chunk: int = 64
    readdir_names_chunk: int = 4096
    #: seconds a folder listed with attributes to its end is listed without them: the
    #: kernel keeps what it was given (well inside its entry timeout, 3600 s)
    plus_kept: float = 600.0


TUNING = Tuning()
