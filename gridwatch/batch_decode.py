"""``ReadingBatch`` messages decoded by msgspec: the rules' and the writer's busiest decode.

The pydantic model in ``gridwatch.events`` stays the contract. The msgspec types here mirror it
with the same limits (texts without NUL, ids of 1 to 64 characters, finite floats, int64
sequence numbers, times with an offset, no unknown key), but accept less: only the JSON the
model writes itself. A message they refuse is decoded by pydantic, which accepts it or gives
the reason its dead letter carries; so msgspec only ever speeds up what pydantic accepts too
(``tests/unit/test_batch_decode.py`` holds the two to that on a corpus of bad batches).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from gridwatch.events import ReadingBatch, Report, decode

_Id = Annotated[str, Meta(min_length=1, max_length=64)]
# JSON numbers beyond the largest float are refused as out of range, as NaN and Infinity are.
Finite = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
_Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
_Aware = Annotated[datetime, Meta(tz=True)]
# What msgspec would read otherwise than pydantic goes to pydantic. JSON can only write NUL as
# this escape, and a scan for it costs a fraction of msgspec's per-string regular expression.
# msgspec rounds a time's digits past the microsecond where pydantic truncates them; in a batch
# only a time's seconds follow a colon with a fraction (values are in arrays).
_NUL = b"\\u0000"
_SUB_MICROSECOND = re.compile(rb":\d\d\.\d{7}")


def _pydantic_only(data: bytes) -> bool:
    return _NUL in data or _SUB_MICROSECOND.search(data) is not None


class _Report(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    device_id: _Id
    ts: _Aware
    values: Annotated[dict[str, tuple[Finite, str]], Meta(min_length=1)]
    seq: _Int64 | None = None


class _Batch(msgspec.Struct, forbid_unknown_fields=True, gc=False, rename={"schema_": "schema"}):
    schema_: Literal["gw.reading-batch/1"]
    id: UUID
    received_at: _Aware
    reports: Annotated[tuple[_Report, ...], Meta(min_length=1)]


_one = msgspec.json.Decoder(_Batch)
_many = msgspec.json.Decoder(list[_Batch])


def _batch(wire: _Batch) -> ReadingBatch:
    reports = tuple(Report.trusted(r.device_id, r.ts, r.seq, r.values) for r in wire.reports)
    return ReadingBatch.trusted(id=wire.id, received_at=wire.received_at, reports=reports)


def decode_reading_batch(data: bytes) -> ReadingBatch:
    """``decode(ReadingBatch, data)``, by msgspec where it can: PayloadError with the reason."""
    if not _pydantic_only(data):
        try:
            return _batch(_one.decode(data))
        except msgspec.MsgspecError:
            pass
    return decode(ReadingBatch, data)


def decode_reading_batches(raws: Sequence[bytes]) -> list[ReadingBatch] | None:
    """Every message of ``raws`` decoded at once as one JSON array, or None if msgspec refuses
    any of them (the caller then decodes them one at a time, to find the one at fault)."""
    data = b"[" + b",".join(raws) + b"]"
    if _pydantic_only(data):
        return None
    try:
        wires = _many.decode(data)
    except msgspec.MsgspecError:
        return None
    if len(wires) != len(raws):  # a message that was itself several array items
        return None
    return [_batch(w) for w in wires]
