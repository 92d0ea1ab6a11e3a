"""One source of truth for the data formats (st_simcse/data/formats.py): the docs' table, the help texts and the
errors take their lists from it, and no module writes such a list by hand."""

from __future__ import annotations

import re

from conftest import REPO

from st_simcse.data.formats import COMPRESSIONS, DATA_FILE_SUFFIXES, FORMATS, describe_sources, format_of, names


def test_the_docs_table_is_the_format_table():
    text = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    table = text.split("<!-- formats -->", 1)[1].split("<!-- /formats -->", 1)[0]
    rows = [line.split("|")[1:-1] for line in table.strip().splitlines()[2:]]
    documented = [(cells[1].strip(" `"), cells[2].strip(" `")) for cells in rows]
    assert documented == [(f.suffix, f.builder) for f in FORMATS]


def test_every_list_of_formats_comes_from_the_table():
    handwritten = re.compile(r"csv, tsv, jsonl|csv/tsv/jsonl|jsonl, json, parquet")
    for path in [*REPO.glob("st_simcse/**/*.py"), *REPO.glob("recipes/*.py")]:
        if path.name == "formats.py":
            continue
        assert not handwritten.search(path.read_text(encoding="utf-8")), f"{path} lists the formats by hand"
    for data_format in FORMATS:
        assert data_format.name in describe_sources() and data_format.suffix in DATA_FILE_SUFFIXES
    assert names(tabular_only=True) == ", ".join(f.name for f in FORMATS if f.tabular)
    assert set(COMPRESSIONS) <= set(DATA_FILE_SUFFIXES)


def test_a_suffix_names_its_format_after_any_compression():
    assert format_of("a/b.jsonl.gz")[0].name == "jsonl" and format_of("a/b.jsonl.gz")[1] == ".gz"
    assert format_of("corpus.TSV")[0].name == "tsv" and format_of("corpus.arrow")[0].builder == "arrow"
    assert format_of("notes.md")[0].name == "text"  # an unknown suffix is plain text, one row per line
