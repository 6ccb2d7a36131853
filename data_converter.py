"""The data converter every dunwise client and worker uses: pydantic models as JSON.

Invariants:
- The wire format is `temporalio.contrib.pydantic`'s: payloads written by either read back
  with the other, so a client built with `pydantic_data_converter` still speaks to dunwise.
- One payload converter serves the whole process. The SDK asks the converter class for a
  new instance for every workflow it runs and twice for every activation; each new one
  built pydantic's schema (a `TypeAdapter`) afresh for every payload type it met. The
  shared one keeps them, and holds no per-call state: it does not depend on the
  serialization context.
"""

from __future__ import annotations

import threading
from typing import Self

from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter, SerializationContext


class SharedPydanticPayloadConverter(PydanticPayloadConverter):
    """`PydanticPayloadConverter`, built once per process."""

    _shared: SharedPydanticPayloadConverter | None = None
    _lock = threading.Lock()

    def __new__(cls) -> SharedPydanticPayloadConverter:
        if cls._shared is not None:  # every call but the first: no lock on the hot path
            return cls._shared
        with cls._lock:
            if cls._shared is None:
                shared = super().__new__(cls)
                PydanticPayloadConverter.__init__(shared)
                cls._shared = shared
            return cls._shared

    def __init__(self) -> None:
        """Built in `__new__`, once."""

    def with_context(self, context: SerializationContext) -> Self:
        return self


DATA_CONVERTER = DataConverter(payload_converter_class=SharedPydanticPayloadConverter)
