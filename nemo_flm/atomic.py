"""Write-then-rename, for every output this package makes: a file or directory appears at its path
only when complete, so an interrupted write never leaves something that looks finished (and never
destroys the previous complete version before the new one exists).

The output is written at `<path>.partial` and renamed onto `<path>`. Renaming a file replaces the
old one atomically; a directory cannot be replaced in one step, so the old one is moved aside to
`<path>.old` first and removed after. Multi-process writers (every tensor-parallel rank writes
its shards) use `partial_path`, `discard` and `publish` around their own barriers; single writers
use `atomic_output`.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from typing import Iterator


def partial_path(path: str) -> str:
    """`<path>.partial` beside `path` (a trailing slash, `out/`, names the same output)."""
    return f"{os.path.normpath(path)}.partial"


def discard(path: str) -> None:
    """Remove a file or directory if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def publish(tmp: str, path: str) -> None:
    """Move the complete output `tmp` to `path`, replacing what is there."""
    path = os.path.normpath(path)
    if os.path.isdir(path) and not os.path.islink(path):
        old = f"{path}.old"
        discard(old)
        os.replace(path, old)
        os.replace(tmp, path)
        discard(old)
    else:
        os.replace(tmp, path)


@contextmanager
def atomic_output(path: str) -> Iterator[str]:
    """Yield the temporary path to write; on success it becomes `path`, on failure it is removed."""
    tmp = partial_path(path)
    discard(tmp)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        discard(tmp)
