"""The data package's user error and where a sample came from, so that a problem found late (an image that will
not decode, an empty answer) still names the data file, the entry and the field it was read from."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Optional, Union

from mmguard.core.errors import UserError

PathLike = Union[str, Path]


class DataFormatError(UserError):
    """A data file (or data set) that does not follow its format; the message names file, entry and field."""

    def __init__(self, file: PathLike, problem: str, *, entry: Optional[Union[int, str]] = None,
                 entry_id: Any = None, field: Optional[str] = None):
        self.file, self.entry, self.entry_id, self.field, self.problem = str(file), entry, entry_id, field, problem
        where = [self.file]
        if entry is not None:
            label = entry if isinstance(entry, str) else f"entry {entry}"
            where.append(label + (f" (id {entry_id!r})" if entry_id is not None else ""))
        elif entry_id is not None:
            where.append(f"id {entry_id!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(": ".join(where) + f": {problem}")


@dataclasses.dataclass  # not frozen: Lightning's apply_to_collection rebuilds the dataclasses inside a batch
class Origin:
    """Where a sample was read: the data file (or hub path), the entry (index or label such as ``line 3``), the
    entry's id as written, and the field path of each part (``{"answer": "conversations[3].value"}``)."""

    file: str
    entry: Optional[Union[int, str]] = None
    entry_id: Any = None
    fields: Dict[str, str] = dataclasses.field(default_factory=dict)

    def error(self, part: str, problem: str) -> DataFormatError:
        """A :class:`DataFormatError` about ``part`` (``image``, ``question``, ``answer``, ``id``) of this entry."""
        return DataFormatError(self.file, problem, entry=self.entry, entry_id=self.entry_id,
                               field=self.fields.get(part, part))
