"""The bounded pool of background fetches."""
from __future__ import annotations

import threading

from dcorfs.io.background import BackgroundFetches


def test_tasks_beyond_the_pool_size_wait_and_then_run():
    pool = BackgroundFetches(workers=2)
    release = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    def task(i: int) -> int:
        with lock:
            started.append(i)
        release.wait(5)
        return i

    futures = [pool.submit(task, i) for i in range(6)]
    for _ in range(100):
        with lock:
            if len(started) == 2:
                break
        threading.Event().wait(0.01)
    assert len(started) == 2  # bounded: two threads, however many tasks
    assert pool.counts()["pending"] == 6
    release.set()
    assert [f.result(timeout=5) for f in futures] == list(range(6))
    for _ in range(100):  # the done-callbacks run just after the results
        if pool.counts() == {"pending": 0, "done": 6}:
            break
        threading.Event().wait(0.01)
    assert pool.counts() == {"pending": 0, "done": 6}
    pool.shutdown()
