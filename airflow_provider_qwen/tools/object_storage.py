"""``object_storage_tool``: the model reads a text file, or lists a folder, under one base folder
on any ``ObjectStoragePath`` store (``file://``, ``s3://``, ``gs://``, ...), never outside it.

A path is relative: absolute paths, URLs and ``..`` are refused, and on the local file system the
real path (symbolic links resolved) must stay inside the base. A long file comes back in pieces of
at most ``max_bytes``, each ending with a note giving the ``offset`` of the next piece.
"""

import codecs
import os
import posixpath
import re
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.agent.bounds import bound_text
from airflow_provider_qwen.agent.tools import Tool, tool
from airflow_provider_qwen.tools._common import (
    ToolRefusedError,
    check_int,
    check_max_bytes,
    check_name,
    fit_json,
)

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

_DRIVE = re.compile(r"^[A-Za-z]:")
_NOTE = "\n[truncated: bytes {start}-{end} of {size} shown; call again with offset={end} for more]"

Entry = tuple[str, str, int | None]  # (name, "file" | "folder", size)


def object_storage_tool(
    base: "str | os.PathLike[str] | ObjectStoragePath",
    *,
    max_bytes: int = 20_000,
    max_entries: int = 200,
    name: str = "read_file",
    description: str | None = None,
    conn_id: str | None = None,
) -> Tool:
    """A tool that reads the text file at ``path`` under ``base`` (from byte ``offset``), or lists
    the folder at ``path``. ``base`` is an ``ObjectStoragePath``, a URL (``s3://bucket/docs``, with
    ``conn_id`` or ``s3://conn@bucket/docs``) or a local folder. Nothing is opened here: the store
    is reached when the model calls the tool, so a DAG file stays fast to parse."""
    check_name(name, "name")
    check_max_bytes(max_bytes)
    check_int(max_entries, "max_entries", 1)
    if isinstance(base, os.PathLike):
        base = os.fspath(base)
    if isinstance(base, str):
        check_name(base, "base")
    elif not callable(getattr(base, "joinpath", None)):
        raise ValueError(f"base={base!r}: give an ObjectStoragePath, a URL or a local folder")
    if description is None:
        description = (
            "Read a text file, or list a folder, inside the folder this tool gives access to. path is "
            "relative to that folder ('.' for the folder itself). A long file is cut at "
            f"{max_bytes} bytes with a note giving the offset to read the rest from."
        )

    def read_file(path: str, offset: int = 0) -> str:
        """Read a text file or list a folder.

        :param path: a file or folder relative to the tool's folder; '.' for the folder itself
        :param offset: the byte to start reading a file at (from a truncation note); 0 for its start
        """
        parts = _parts(path)
        if offset < 0:
            raise ToolRefusedError(f"refused: offset={offset}; give 0 or more")
        shown = "/".join(parts) or "."
        root = _root(base, conn_id)
        from airflow_provider_qwen.storage import local_path

        local_root = local_path(root)
        if local_root is not None:
            return _read_local(local_root, parts, shown, offset, max_bytes, max_entries)
        return _read_remote(root.joinpath(*parts) if parts else root, shown, offset, max_bytes, max_entries)

    return tool(read_file, name=name, description=description)


def _root(base: Any, conn_id: str | None) -> "ObjectStoragePath":
    """``base`` as an ``ObjectStoragePath`` (a plain local folder as a ``file://`` URL)."""
    if not isinstance(base, str):
        return base
    from airflow.sdk import ObjectStoragePath

    url = base if "://" in base else f"file://{os.path.abspath(os.path.expanduser(base))}"
    return ObjectStoragePath(url, conn_id=conn_id)


def _parts(path: str) -> list[str]:
    """The segments of a relative path; absolute paths, URLs and ``..`` refused."""
    if not isinstance(path, str):
        raise ToolRefusedError(f"refused: path={path!r}; give a relative path as text")
    if "\x00" in path:
        raise ToolRefusedError("refused: the path contains a NUL character")
    if "://" in path or path.startswith(("/", "\\", "~")) or _DRIVE.match(path):
        raise ToolRefusedError(
            f"refused: path={path!r} is absolute; give a path relative to the tool's folder"
        )
    parts = [part for part in re.split(r"[/\\]", path) if part not in ("", ".")]
    if ".." in parts:
        raise ToolRefusedError(
            f"refused: path={path!r} goes up with '..'; only the tool's folder may be read"
        )
    return parts


def _read_local(
    root: str, parts: list[str], shown: str, offset: int, max_bytes: int, max_entries: int
) -> str:
    """A local file or folder, after checking its real path stays inside the real root."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(os.path.join(real_root, *parts))
    if os.path.commonpath([real_root, real]) != real_root:
        raise ToolRefusedError(f"refused: {shown} leads outside the tool's folder (a symbolic link)")
    if os.path.isdir(real):
        entries: list[Entry] = []
        with os.scandir(real) as scan:
            for entry in scan:
                if entry.is_dir():
                    entries.append((entry.name, "folder", None))
                else:
                    entries.append((entry.name, "file", _size(entry)))
        return _listing(shown, entries, max_entries, max_bytes)
    if not os.path.isfile(real):
        raise ToolRefusedError(f"no such file or folder: {shown}")

    fd = _open_inside(real_root, real, shown)
    with os.fdopen(fd, "rb") as file:

        def read(start: int, length: int) -> bytes:
            file.seek(start)
            return file.read(length)

        return _text(shown, os.fstat(file.fileno()).st_size, offset, read, max_bytes)


def _open_inside(real_root: str, real: str, shown: str) -> int:
    """Open ``real`` (already resolved, inside ``real_root``) one segment at a time without following
    a symbolic link: a folder swapped for a link after the check (a race) is refused, not followed."""
    if not hasattr(os, "O_NOFOLLOW") or os.open not in os.supports_dir_fd:
        return os.open(real, os.O_RDONLY)  # no *at() calls here (Windows): the check above stands
    segments = os.path.relpath(real, real_root).split(os.sep)
    directory = os.open(real_root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for position, segment in enumerate(segments):
            last = position == len(segments) - 1
            kind = getattr(os, "O_NONBLOCK", 0) if last else getattr(os, "O_DIRECTORY", 0)  # no FIFO wait
            flags = os.O_RDONLY | os.O_NOFOLLOW | kind
            try:
                opened = os.open(segment, flags, dir_fd=directory)
            except OSError as exc:
                raise ToolRefusedError(
                    f"refused: {shown} changed while it was read (a symbolic link appeared): {exc.strerror}"
                ) from None
            os.close(directory)
            directory = opened
        if not stat.S_ISREG(os.fstat(directory).st_mode):
            raise ToolRefusedError(f"refused: {shown} is not a regular file")
        return directory
    except BaseException:
        os.close(directory)
        raise


def _size(entry: os.DirEntry[str]) -> int | None:
    try:
        return entry.stat().st_size
    except OSError:  # a dangling symbolic link
        return None


def _read_remote(target: Any, shown: str, offset: int, max_bytes: int, max_entries: int) -> str:
    """A file or folder on an object store (no symbolic links there: the segments were checked)."""
    fs, key = target.fs, target.path
    if target.is_dir():
        entries: list[Entry] = []
        own = key.rstrip("/")
        for info in fs.ls(key, detail=True):
            full = str(info.get("name", "")).rstrip("/")
            if not full or full == own:
                continue
            folder = info.get("type") == "directory"
            size = info.get("size")
            entries.append(
                (posixpath.basename(full), "folder" if folder else "file", None if folder else size)
            )
        return _listing(shown, entries, max_entries, max_bytes)
    if not target.is_file():
        raise ToolRefusedError(f"no such file or folder: {shown}")

    def read(start: int, length: int) -> bytes:
        return bytes(fs.cat_file(key, start=start, end=start + length))

    return _text(shown, int(fs.size(key)), offset, read, max_bytes)


def _text(shown: str, size: int, offset: int, read: Callable[[int, int], bytes], max_bytes: int) -> str:
    """The file's text from ``offset``: whole if it fits, else cut at a character boundary with a
    note giving the offset of the rest. Binary files (NUL bytes) are refused."""
    if offset > size:
        raise ToolRefusedError(f"refused: offset={offset} is past the end of {shown} ({size} bytes)")
    data = read(offset, max_bytes + 1)
    if b"\x00" in data:
        raise ToolRefusedError(
            f"refused: {shown} looks binary (it has NUL bytes); only text files can be read"
        )
    if len(data) <= max_bytes and offset + len(data) >= size:
        return bound_text(data.decode("utf-8", errors="replace"), max_bytes)
    room = max(0, max_bytes - len(_NOTE.format(start=offset, end=size, size=size).encode("utf-8")))
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(data[:room], final=False)
    end = offset + room - len(decoder.getstate()[0])
    return bound_text(text + _NOTE.format(start=offset, end=end, size=size), max_bytes)


def _listing(shown: str, entries: list[Entry], max_entries: int, max_bytes: int) -> str:
    """A folder's entries as JSON, sorted, at most ``max_entries`` and ``max_bytes``."""
    entries = sorted(entries)
    more = len(entries) > max_entries
    entries = entries[:max_entries]
    items = [
        {"name": entry_name, "type": kind} | ({} if size is None else {"size": size})
        for entry_name, kind, size in entries
    ]

    def render(count: int, cut: bool) -> dict[str, Any]:
        document: dict[str, Any] = {"folder": shown, "entries": items[:count], "truncated": more or cut}
        if more or cut:
            document["note"] = (
                f"only the first {count} entries (by name) are shown; list a subfolder to see less"
            )
        return document

    return fit_json(render, len(items), max_bytes)
