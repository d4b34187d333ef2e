"""Progress bars for long work (downloads, training, the tour).

One place decides whether bars are shown: `ZUPU_PROGRESS=0` silences them (tests do), otherwise
tqdm draws on stderr.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm


def enabled() -> bool:
    return os.environ.get("ZUPU_PROGRESS", "1") not in ("0", "false", "no")


def progress(**kwargs: Any) -> tqdm:
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(disable=not enabled(), **kwargs)
