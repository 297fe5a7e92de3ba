"""Reading a data file safely: its text (UTF-8, a bad byte named by offset), its JSON, and the image paths it
names, which must stay inside the data folder.

An image path that resolves (after ``..`` and symlinks) outside the data folder (the data file's folder, or
``image_root`` when given) is refused unless the loader is called with ``allow_outside=True``: a data file
from elsewhere must not be able to make mmguard read, and re-publish in a protected data set, a file such as
``../../home/me/private.png`` or ``/etc/...``.
"""
from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Any, Optional, Tuple, Union

from mmguard.data.errors import DataFormatError

PathLike = Union[str, Path]


def data_file(file: PathLike) -> Path:
    """``file`` as a path, refused when it is not an existing file."""
    path = Path(os.path.expanduser(str(file)))
    if not path.is_file():
        raise DataFormatError(path, "no such data file" if not path.exists() else "not a file")
    return path


def read_text(file: Path) -> str:
    """The file's text as UTF-8 (a leading byte-order mark is dropped); a byte that is not UTF-8 is named by its
    offset and line."""
    data = file.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataFormatError(file, f"not UTF-8 text: byte 0x{data[offset]:02x} at byte offset {offset} (line "
                              f"{line}); save the file as UTF-8") from None


def parse_json(text: str, file: Path, entry: Optional[str] = None) -> Any:
    """One JSON document; a syntax error names its line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFormatError(file, f"not valid JSON: {err}", entry=entry) from None
    except RecursionError:
        raise DataFormatError(file, "not usable JSON: nested too deeply", entry=entry) from None
    except ValueError as err:  # e.g. an integer literal beyond Python's digit limit
        raise DataFormatError(file, f"not usable JSON: {err}", entry=entry) from None


def image_folder(file: Path, image_root: Optional[PathLike]) -> Tuple[Path, Path]:
    """The folder image paths are relative to, as given and resolved; ``image_root`` must be a folder."""
    if image_root is None:
        base = file.parent
    else:
        base = Path(os.path.expanduser(str(image_root)))
        if not base.is_dir():
            raise DataFormatError(base, f"image_root (for {str(file)!r}) is not a folder")
    return base, base.resolve()


def resolve_image(value: Any, base: Path, real_base: Path, *, file: Path, entry: Union[int, str], entry_id: Any,
                  field: str, check: bool, allow_outside: bool) -> Path:
    """The resolved path of an image named in a data file, refused when it is not a string, lies outside the data
    folder (unless ``allow_outside``) or, with ``check``, is not an existing file."""
    def refuse(problem: str) -> DataFormatError:
        return DataFormatError(file, problem, entry=entry, entry_id=entry_id, field=field)

    if not isinstance(value, str) or not value.strip():
        raise refuse(f"expected an image path string, got {value!r}")
    try:
        path = Path(os.path.expanduser(value))
        real = (path if path.is_absolute() else base / path).resolve()
        outside = not real.is_relative_to(real_base)
        missing = check and not real.is_file()
    except (OSError, ValueError, RuntimeError) as err:  # a NUL byte, a name too long, a symlink loop
        raise refuse(f"image path {value!r} cannot be used: {err}") from None
    if outside and not allow_outside:
        raise refuse(f"image path {value!r} resolves to {str(real)!r}, outside the data folder {str(real_base)!r}; "
                     "move the image inside it, set image_root, or pass allow_outside=true")
    if missing:
        raise refuse(f"image file {str(real)!r} does not exist")
    return real
