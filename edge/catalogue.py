"""The catalogue: every pageable object a runtime may serve, by name, with its size and location.

The cache needs an object's size before it loads it (room is made first, so the budget bounds
memory in flight), and the router needs every adapter's size to charge its paging cost. Both
read it here. An entry's ``location`` is what the backend loads from: a file path for adapters
on disk, any label for a simulated backend.

    catalogue = Catalogue.scan("adapters/", "*.gguf")         # name = file stem, size = bytes
    catalogue = Catalogue.from_sizes({"sql": 48 << 20})       # simulated: sizes only
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, EdgeError


class UnknownObjectError(EdgeError, KeyError):
    """A request named an object the catalogue does not hold."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    size: int  # bytes the object takes once loaded (the cache reserves this much)
    location: str  # where the backend loads it from (a file path, or a label)
    # What the backend and the daemon may want beyond that: an adapter's default scale,
    # description and tags (from its sidecar YAML), and so on.
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"catalogue entry needs a non-empty name, got {self.name!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size <= 0:
            raise ConfigError(f"catalogue entry {self.name!r}: size must be a positive byte "
                              f"count, got {self.size!r}")


class Catalogue(Mapping[str, CatalogueEntry]):
    """Read-only name -> ``CatalogueEntry``, in the order the entries were given."""

    def __init__(self, entries: list[CatalogueEntry] | tuple[CatalogueEntry, ...] = ()) -> None:
        self._entries: dict[str, CatalogueEntry] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise ConfigError(f"catalogue lists {entry.name!r} twice "
                                  f"({self._entries[entry.name].location} and {entry.location})")
            self._entries[entry.name] = entry

    @classmethod
    def from_sizes(cls, sizes: Mapping[str, int], location: str = "simulated") -> Catalogue:
        return cls([CatalogueEntry(str(name), int(size), location)
                    for name, size in sizes.items()])

    @classmethod
    def from_files(cls, files: Mapping[str, str | os.PathLike[str]]) -> Catalogue:
        """Entries named by the mapping's keys; each file's size is its size on disk."""
        return cls([_file_entry(name, Path(path)) for name, path in files.items()])

    @classmethod
    def scan(cls, directory: str | os.PathLike[str], pattern: str = "*.gguf") -> Catalogue:
        """Every file in ``directory`` matching ``pattern``, named by its stem, sorted by name."""
        root = Path(directory)
        if not root.is_dir():
            raise ConfigError(f"catalogue directory {str(root)!r} does not exist or is not a "
                              "directory")
        paths = sorted(p for p in root.glob(pattern) if p.is_file())
        return cls([_file_entry(p.stem, p) for p in paths])

    def __getitem__(self, name: str) -> CatalogueEntry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(list(self._entries)[:10])
            more = "" if len(self._entries) <= 10 else f", ... ({len(self._entries)} in all)"
            raise UnknownObjectError(f"{name!r} is not in the catalogue (it holds: "
                                     f"{known or 'nothing'}{more})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def sizes(self) -> dict[str, int]:
        return {name: entry.size for name, entry in self._entries.items()}

    def __repr__(self) -> str:
        return f"Catalogue({len(self)} objects, {sum(self.sizes().values())} bytes)"


def _file_entry(name: str, path: Path) -> CatalogueEntry:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(f"catalogue entry {name!r}: cannot read {str(path)!r}: "
                          f"{exc.strerror}") from None
    if size == 0:
        raise ConfigError(f"catalogue entry {name!r}: {str(path)!r} is empty")
    return CatalogueEntry(name, size, str(path))
