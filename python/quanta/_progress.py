"""Progress on stderr: a bar for Python-side loops (tqdm when installed) and a percentage
line for native work running in a thread; silent when stderr is not a terminal."""
from __future__ import annotations

import sys
import threading
import time


class Progress:
    """tqdm's bar when tqdm is installed, else a plain one; silent when stderr is not a
    terminal or when disabled."""

    def __init__(self, total: int, label: str, enabled: bool = True):
        self.total, self.label = max(total, 1), label
        self.enabled = enabled and sys.stderr.isatty()
        self.done, self.start, self._last = 0, time.perf_counter(), 0.0
        self._tqdm = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._tqdm = tqdm(total=self.total, desc=label, file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self._tqdm is not None:
            self._tqdm.update(n)
            if self.done >= self.total:
                self._tqdm.close()
            return
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * frac)
            rate = self.done / max(now - self.start, 1e-9)
            sys.stderr.write(f"\r{self.label} [{bar:<30}] {self.done}/{self.total} "
                             f"({rate:,.0f}/s)")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def run_with_progress(work, fraction, label, what):
    """Runs `work` (a native call that releases the GIL) in a thread; with a label, prints
    ``label: 42.0% of <what>`` from fraction() to stderr meanwhile. Exceptions reach the
    caller."""
    if label is None:
        return work()
    failure = []

    def target():
        try:
            work()
        except BaseException as e:  # re-raised below, in the caller's thread
            failure.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    while t.is_alive():
        t.join(0.5)
        print(f"\r{label}: {100 * fraction():5.1f}% of {what}", end="", file=sys.stderr,
              flush=True)
    if failure:
        print(file=sys.stderr)
        raise failure[0]
    print(f"\r{label}: 100.0% of {what}", file=sys.stderr)
