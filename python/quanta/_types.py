"""Names the public signatures take, as Literal types for type checkers."""
from __future__ import annotations

from typing import Literal

Metric = Literal["ip", "l2", "cosine"]
Storage = Literal["f32", "f16", "bf16", "f8e4m3", "f8e5m2", "i8"]
