"""The catalogue of pageable objects: names, sizes, locations, and the errors a user can hit."""

from __future__ import annotations

import pytest

from edge.catalogue import Catalogue, CatalogueEntry, UnknownObjectError
from edge.config import CatalogueConfig, build_catalogue
from edge.errors import ConfigError


def test_scan_names_files_by_stem_with_their_sizes(tmp_path):
    (tmp_path / "b.gguf").write_bytes(b"x" * 20)
    (tmp_path / "a.gguf").write_bytes(b"x" * 10)
    (tmp_path / "readme.txt").write_text("skip me")
    (tmp_path / "dir.gguf").mkdir()  # a directory is not an adapter
    cat = Catalogue.scan(tmp_path)
    assert list(cat) == ["a", "b"] and cat.sizes() == {"a": 10, "b": 20}
    assert cat["a"] == CatalogueEntry("a", 10, str(tmp_path / "a.gguf"))


def test_config_section_combines_directory_and_files(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"x" * 10)
    extra = tmp_path / "elsewhere.bin"
    extra.write_bytes(b"x" * 7)
    cat = build_catalogue(CatalogueConfig(directory=str(tmp_path), files={"e": str(extra)}))
    assert cat.sizes() == {"a": 10, "e": 7}
    with pytest.raises(ConfigError, match=r"lists 'a' twice"):
        build_catalogue(CatalogueConfig(directory=str(tmp_path),
                                        files={"a": str(extra)}))
    assert len(build_catalogue(CatalogueConfig())) == 0


def test_bad_entries_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"catalogue entry 'x': cannot read '/nope/x.gguf'"):
        Catalogue.from_files({"x": "/nope/x.gguf"})
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"catalogue entry 'empty': .* is empty"):
        Catalogue.scan(tmp_path)
    with pytest.raises(ConfigError, match="size must be a positive byte count"):
        Catalogue.from_sizes({"a": 0})
    with pytest.raises(ConfigError, match="does not exist or is not a directory"):
        Catalogue.scan(tmp_path / "missing")


def test_an_unknown_name_lists_what_there_is():
    cat = Catalogue.from_sizes({f"a{i}": 1 for i in range(12)})
    with pytest.raises(UnknownObjectError, match=r"'zz' is not in the catalogue \(it holds: "
                                                  r"a0, a1, .*a9, \.\.\. \(12 in all\)\)"):
        cat["zz"]
    with pytest.raises(KeyError):  # still a KeyError for Mapping users
        Catalogue()["a"]
