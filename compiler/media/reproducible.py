"""Byte-reproducible ISOs with pycdlib: one date, one time zone, no randomness.

pycdlib stamps `time.time()` (formatted with `time.localtime`) into every directory record,
Rock Ridge TF entry and volume descriptor, also while writing; `add_isohybrid(efi=True)` takes
its GPT GUIDs from `uuid.uuid4()` and, without `mbr_id`, a random MBR id. `frozen(epoch, seed)`
is a context manager that, for its duration:
- gives pycdlib's modules a `time` whose `time()` is `epoch` and whose `localtime` is UTC;
- sets TZ=UTC (`time.tzset()`) for anything that reads the process's zone, restored afterwards;
- gives pycdlib's modules a `uuid` whose `uuid4()` is a sequence of version-4 UUIDs derived
  from `seed`, and a `random` seeded from it (callers pass a fixed `mbr_id` as well).
The patches are module attributes of pycdlib only; the rest of the process keeps the real
clock. Not thread-safe (nor is TZ): moat writes one ISO at a time.

The date: SOURCE_DATE_EPOCH when set (https://reproducible-builds.org/specs/source-date-epoch/),
else one derived from the inputs' hash (in 2010..2019: in the past, and plainly not a build
time); SOURCE_DATE_EPOCH is clamped to [1980-01-01, 2099-12-31], which every ISO 9660 date
field can hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import time
import types
import uuid
from typing import Iterator

from ..diagnostics import Diagnostic, MoatError

EARLIEST = 315532800     # 1980-01-01T00:00:00Z
LATEST = 4102444799      # 2099-12-31T23:59:59Z
DERIVED_BASE = 1262304000  # 2010-01-01: dates derived from a hash fall in 2010..2019, always past
DERIVED_SPAN = 10 * 365 * 86400


def clamp(epoch: int) -> int:
    return min(max(int(epoch), EARLIEST), LATEST)


def derived_epoch(seed: bytes) -> int:
    """A date in 2010..2019 (whole seconds) that only depends on `seed`."""
    return DERIVED_BASE + int.from_bytes(hashlib.sha256(b"moat-iso-date\0" + seed).digest()[:8], "big") % DERIVED_SPAN


def source_date(seed: bytes, environ: dict | None = None) -> int:
    """SOURCE_DATE_EPOCH (clamped), else a date derived from `seed`."""
    env = os.environ if environ is None else environ
    raw = env.get("SOURCE_DATE_EPOCH")
    if raw is not None and raw.strip() != "":
        try:
            value = int(raw.strip())
        except ValueError:
            raise MoatError([Diagnostic("iso-source-date", f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds",
                                        hint="set it to a Unix time such as 1700000000, or unset it")]) from None
        return clamp(value)
    return derived_epoch(seed)


def uuid_sequence(seed: bytes) -> Iterator[uuid.UUID]:
    """Version-4 (random-format) UUIDs from sha256(seed, n): stable for the same seed."""
    n = 0
    while True:
        digest = hashlib.sha256(b"moat-iso-uuid\0" + seed + n.to_bytes(8, "big")).digest()
        yield uuid.UUID(bytes=digest[:16], version=4)
        n += 1


def _frozen_time(epoch: int) -> types.SimpleNamespace:
    real = time
    return types.SimpleNamespace(
        time=lambda: float(epoch),
        localtime=lambda secs=None: real.gmtime(epoch if secs is None else secs),
        gmtime=lambda secs=None: real.gmtime(epoch if secs is None else secs),
        strftime=real.strftime, strptime=real.strptime, struct_time=real.struct_time, mktime=real.mktime,
        monotonic=real.monotonic, perf_counter=real.perf_counter, sleep=real.sleep,
    )


def _pycdlib_modules() -> list[types.ModuleType]:
    import pycdlib
    from pycdlib import dates, headervd, inplaceeditor, isohybrid, udf, utils
    from pycdlib import pycdlib as core

    del pycdlib
    return [core, dates, headervd, inplaceeditor, isohybrid, udf, utils]


@contextlib.contextmanager
def frozen(epoch: int, seed: bytes) -> Iterator[None]:
    """pycdlib sees one clock (`epoch`, UTC) and one source of GUIDs (from `seed`) inside the block."""
    fake_time = _frozen_time(epoch)
    uuids = uuid_sequence(seed)
    fake_uuid = types.SimpleNamespace(uuid4=lambda: next(uuids), UUID=uuid.UUID)
    fake_random = random.Random(hashlib.sha256(b"moat-iso-random\0" + seed).digest())
    saved: list[tuple[types.ModuleType, str, object]] = []
    for module in _pycdlib_modules():
        for name, fake in (("time", fake_time), ("uuid", fake_uuid), ("random", fake_random)):
            if name in vars(module):
                saved.append((module, name, vars(module)[name]))
                setattr(module, name, fake)
    tz = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)
        if tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = tz
        time.tzset()
