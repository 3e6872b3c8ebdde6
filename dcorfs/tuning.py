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
    # -- threads and connections -------------------------------------------------------
    #: the pool for decodes and listing tasks (they may wait for fetches, so it is larger
    #: than the cores)
    decode_workers: int = 16
    #: seconds without a request after which opening a resource first reopens store
    #: connections (servers close idle ones: S3 after about 20 s, nginx after 75 s)
    reopen_after: float = 5.0
    #: seconds "not found" is remembered (a resource id, a dataset name); errors never are
    negative_ttl: float = 30.0

    # -- the kernel (FUSE mount options) --------------------------------------------------
    #: seconds the kernel keeps attributes and names it was given: nothing on DCOR changes
    #: under a published resource, and a second ``ls -l`` then costs no call at all
    attr_timeout: int = 3600
    entry_timeout: int = 3600
    #: seconds the kernel remembers that a name does not exist (a new dataset appears
    #: after at most this long)
    negative_timeout: int = 10
    #: libfuse's idle worker threads kept (it runs at most 10; libfuse 3.14 warns at every
    #: mount about its own default, UINT_MAX, unless a value is given)
    max_idle_threads: int = 64

    # -- memory ----------------------------------------------------------------------------
    #: decoded chunks kept, so 128 KiB kernel reads do not decode a 1 MiB chunk eight
    #: times: a quarter of ``--cache-size``, at least 1 MiB, at most this
    decoded_cache_max: int = 64 << 20

    #: nodes a folder of many names keeps, most recently looked up: each may hold an
    #: open HDF5 dataset, and ``ls -l`` of 220,000 contours must not keep them all
    lazy_entries_kept: int = 256

    # -- listings ----------------------------------------------------------------------
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

    # -- search/ ---------------------------------------------------------------------------
    #: pages of results asked for at once before their count is known: two spare a round
    #: trip for up to 2,000 results, within the 1 + ceil(results / 1,000) requests a
    #: search may take (fewer than 1,000 results cost one empty answer)
    search_first_pages: int = 2
    #: queries ``ls search/`` lists (and whose folders are kept made), the latest last
    search_recent: int = 100

    # -- views/tsv.py ------------------------------------------------------------------
    #: rows of features.tsv formatted at once (about 0.7 MB for 40 columns): the kernel
    #: reads 128 KiB at a time, and each block asks every column once
    tsv_block_rows: int = 1024
    #: formatted blocks of features.tsv kept per file
    tsv_keep_blocks: int = 4
    #: threads reading the columns of one features.tsv at once
    tsv_column_threads: int = 64

    # -- dcor/contour_sizes.py ---------------------------------------------------------
    #: lookups of contours of unknown size, without one of them opened, after which the
    #: shapes of all are read in bulk (a loop that reads each contour opens each)
    contour_bulk_after: int = 16
    #: seconds after a failed bulk read of contour shapes before a listing tries again
    contour_bulk_retry_after: float = 60.0
    #: bytes of a group's object header read from its start (its symbol table message is
    #: early)
    contour_group_header_bytes: int = 4096

    # -- dcor/contour_addresses.py -----------------------------------------------------
    #: bytes fetched from a looked-ahead contour's object header on: dclab writes its
    #: header, chunk index and chunk one after another, about 2.9 KB for a contour
    contour_span: int = 4096
    #: looked-ahead contours at most this far apart share a request (the contours of
    #: consecutive events sit together, between a batch's image chunks), and a request
    #: is this long at most
    contour_span_gap: int = 256 * 1024
    contour_span_request: int = 4 << 20
    #: seconds between keeping contour addresses on disk when only single lookups
    #: learned them (each lookahead keeps them at once)
    contour_keep_every: float = 10.0

    # -- dcor/api.py -------------------------------------------------------------------
    #: seconds a request waits for DCOR's maintenance (503) to end where no operation
    #: deadline bounds it (background work)
    maintenance_wait: float = 600.0
    #: seconds between asks during maintenance, without a Retry-After
    maintenance_poll: float = 2.0

    # -- dcor/resource_folder.py -------------------------------------------------------
    #: basins inside basin files followed at most this deep (a cycle is refused anyway)
    max_basin_depth: int = 8

    # -- dcor/upstream.py --------------------------------------------------------------
    #: rows of another resource read in one call when they lie at most this many rows apart
    #: (a gap costs rows nobody asked for; each call costs a decode at least)
    upstream_gather_gap: int = 8

    # -- hdf5/chunked_rows.py ----------------------------------------------------------
    #: a decoded chunk is kept in the disk cache too when it is at most this many times its
    #: stored size: reading it back then costs little more disk than its raw bytes and
    #: saves decoding it (floating-point features barely compress; images do, and a decoded
    #: copy would take several times their room)
    keep_decoded_ratio: float = 1.5

    # -- hdf5/small_dataset.py ---------------------------------------------------------
    #: bytes of an HDF5 object header read first; a longer one is read again whole
    header_read: int = 1024

    # -- prefetch.py -------------------------------------------------------------------
    #: bytes ``dcorfs prefetch`` reads at a time
    prefetch_piece: int = 4 * 1024 ** 2

    # -- io/store_mirror.py ------------------------------------------------------------
    #: seconds a failed site cache is left alone before a read tries it again
    mirror_retry_after: float = 30.0
    #: seconds to wait for a connection to the site cache (it is near; the object store is
    #: the fallback)
    mirror_connect_timeout: float = 3.0

    # -- io/range_fetch.py -------------------------------------------------------------
    #: bytes a streamed response hands to its reader at a time
    stream_piece: int = 128 * 1024
    #: connections to the object store opened at mount (and again after idling): a cold
    #: read sends a request per feature header, chunk index and chunk at once, and each new
    #: connection would cost DCOR's TCP and TLS handshakes (2 round trips) first; as many
    #: as the background pool has threads
    store_connections: int = 24

    # -- io/block_cache.py -------------------------------------------------------------
    #: blocks read from disk before their waiters are released
    disk_batch: int = 16
    #: block uses (the disk's LRU order) written in one transaction
    uses_batch: int = 256

    # -- io/reachability.py ------------------------------------------------------------
    #: connect failures in a row that make a host down (one more than a blip)
    down_after: int = 2
    #: seconds a down host is not asked; then one request probes it
    retry_every: float = 15.0

    # -- io/remote_object.py -----------------------------------------------------------
    #: bytes of a file's first read.  The head holds the superblock and the root group; in
    #: files written event by event (dclab's RTDCWriter) also the /events group tables and
    #: the first object headers, often all within the first MiB.  A MiB costs ~20 ms at 50
    #: MB/s, a round trip 20-100 ms: a head that saves one dependent round trip pays.  It
    #: streams in one request; opening waits only for its first ``probe_first`` bytes and
    #: the tail
    probe_head: int = 1024 * 1024
    #: bytes of the head that opening a file waits for: the /events group's header lies in
    #: the first 64 KiB of 40 of the 41 files of the test corpus and the bench (in the
    #: other at 76 KiB, still in the head); the group tables the rest of the head names
    #: are fetched once it has arrived.  256 KiB cost a cold scalar read 4 ms more
    probe_first: int = 64 * 1024
    #: bytes of a file's end read with its head (copied and condensed files keep some group
    #: tables at the very end)
    probe_tail: int = 64 * 1024

    # -- io/background.py --------------------------------------------------------------
    #: threads for background fetches, and so background requests in flight at most (the
    #: HTTP pool holds 32)
    background_workers: int = 24

    # -- io/disk_cache.py --------------------------------------------------------------
    #: share of the disk cache's filesystem always left free, whatever the size limit
    min_free_share: float = 0.05
    #: seconds between writes of a block's last use (LRU needs no more)
    touch_every: float = 60.0
    #: seconds the disk cache writes nothing after a write failed for a full disk twice
    #: (eviction could not make room: other files fill the filesystem)
    disk_full_pause: float = 60.0
    #: bytes kept free beyond the floor for the index's own growth: its WAL, checkpointed
    #: every 128 pages (512 KiB), and its shared-memory file
    disk_index_room: int = 1 << 20

    # -- mount/memory.py ---------------------------------------------------------------
    #: bytes from which an allocation gets a mapping of its own (setting it also stops
    #: glibc from raising it)
    large_buffer: int = 1 << 20


TUNING = Tuning()
