"""Host memory of this process, measured: the anonymous resident set (file-backed mmap pages
excluded) and its peak over a block, polled in a thread. Used to check that offline growth stays
near one tensor (scripts/grow_checkpoint.py) and the memory estimator against real runs
(scripts/estimate.py)."""

from __future__ import annotations

import threading
import time


def anon_rss() -> int:
    """This process's anonymous resident memory in bytes (Linux), file-backed mmap pages excluded."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakAnon:
    """Polls anon_rss every 5 ms in a thread; .peak is the maximum seen."""

    def __enter__(self):
        self.peak, self._stop = anon_rss(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, anon_rss())
