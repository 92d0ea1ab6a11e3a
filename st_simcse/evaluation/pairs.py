"""The user's own yardstick, read: sentence pairs with a similarity score, from any tabular source of
:mod:`st_simcse.data.formats` (a file of any format, a ``save_to_disk`` folder, a hub dataset), checked row by row;
an almost-right file (empty, a header alone, the wrong separator) says what is wrong. They are judged like an STS
task by :func:`st_simcse.scored_pairs_evaluator` (:mod:`st_simcse.evaluation.evaluators`). Used by the evaluation
command, the recipes' checks and their model selection. No heavy library is imported here."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from st_simcse.console import column_names
from st_simcse.data.formats import FORMATS, format_of
from st_simcse.data.readers import open_text, read_dataset
from st_simcse.evaluation.sts import STSData

PAIR_COLUMNS = ("sentence1", "sentence2", "score")
# The separators a file of pairs may have been written with, by how a message names them; and the one each
# delimited-text suffix is read with (plain text, .txt, has none: one row per line).
SEPARATORS = {"\t": "tabs", ";": "';'", "|": "'|'", ",": "commas"}
SUFFIX_SEPARATORS = {
    f.suffix: f.options.get("sep", ",") if f.builder == "csv" else None
    for f in FORMATS
    if f.builder in ("csv", "text")
}


def pair_columns(text: str | None, option: str) -> list[str] | None:
    """``--dev-columns`` / ``--test-columns S1,S2,SCORE``: the columns of a scored-pairs file, checked."""
    roles = "the two sentence columns and the score column"
    return column_names(text, option, (3,), "query,passage,label", roles)


def load_scored_pairs(
    source: str | os.PathLike,
    name: str,
    split: str = "train",
    what: str = "--dev-file",
    columns: Sequence[str] | None = None,
) -> STSData:
    """The pairs of ``source`` (columns ``sentence1, sentence2, score``, or the three ``columns`` named instead, in
    that order) as an STS task called ``name``. Raises a
    ``ValueError`` (or ``FileNotFoundError``) that names the source, the row and the fix for a missing column, an
    empty sentence, a score that is not a number, or fewer than two distinct scores; and for a file that is almost
    right: an empty file, a header line without pairs, or fields separated by another character than its suffix
    says (a .csv written with ';' or tabs reads as one column)."""
    source = os.fspath(source)
    try:
        dataset = read_dataset(source, split, what=what)
    except ValueError:
        # datasets' own error for these (e.g. 'Instruction "train" corresponds to no data!') does not say why.
        problem = _empty_file_problem(source, what) or _separator_problem(source, what)
        if problem:
            raise ValueError(problem) from None
        raise
    wanted = list(columns) if columns is not None else list(PAIR_COLUMNS)
    if len(wanted) != 3 or len(set(wanted)) != 3:
        raise ValueError(
            f"{what}: name three different columns, the two sentences and the score (e.g. query,passage,label), got "
            f"{','.join(wanted)}."
        )
    present = dataset.column_names
    missing = [column for column in wanted if column not in present]
    if missing:
        problem = _separator_problem(source, what, present)
        if problem:
            raise ValueError(problem)
        option = f"{what.removesuffix('-file')}-columns S1,S2,SCORE" if what.startswith("--") else "columns=[...]"
        how = f"or name yours with {option}" if columns is None else "check the names"
        raise ValueError(
            f"{what} {source}: no column(s) {missing}; its columns are {present}. Scored pairs need two sentence "
            f"columns and a score column: {', '.join(PAIR_COLUMNS)} ({how})."
        )
    rows = dataset.select_columns(wanted).to_dict()
    sentences: dict[str, list[str]] = {column: [] for column in PAIR_COLUMNS[:2]}
    scores = []
    for row, (first, second, score) in enumerate(zip(*(rows[column] for column in wanted)), start=1):
        for column, text in zip(wanted[:2], (first, second)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{what} {source}, row {row}: {column} is {text!r}; every pair needs two sentences.")
            sentences[PAIR_COLUMNS[wanted.index(column)]].append(text.strip())
        scores.append(_score(score, source, row, what))
    if len(set(scores)) < 2:
        raise ValueError(
            f"{what} {source}: {len(scores)} pair(s) with {len(set(scores))} distinct score(s); a Spearman "
            "correlation needs at least two pairs with different scores."
        )
    return STSData(name, sentences["sentence1"], sentences["sentence2"], scores)


def _first_lines(source: str, count: int) -> tuple[str, list[str]] | None:
    """The suffix of the delimited-text file ``source`` (.csv, .tsv, .txt, maybe compressed) and up to ``count`` of
    its non-blank lines; None for another source. Read only on an error path."""
    if not os.path.isfile(source):
        return None
    data_format, compression = format_of(source)
    if data_format.suffix not in SUFFIX_SEPARATORS:
        return None
    lines: list[str] = []
    try:
        with open_text(source, compression, errors="replace") as handle:
            for line in handle:
                if line.strip():
                    lines.append(line.rstrip("\r\n"))
                    if len(lines) == count:
                        break
    except (OSError, EOFError, ValueError, ImportError):
        return None
    return data_format.suffix, lines


def _empty_file_problem(source: str, what: str) -> str | None:
    """What is wrong with a .csv or .tsv file of pairs that is empty or holds only its header line, else None."""
    found = _first_lines(source, 2)
    if found is None or found[0] == ".txt" or len(found[1]) > 1:
        return None
    suffix, lines = found
    separated = f"separated by {SEPARATORS[SUFFIX_SEPARATORS[suffix]]}"
    if not lines:
        return (
            f"{what} {source} is empty: write a header line sentence1, sentence2, score, then one line per pair, "
            f"the fields {separated}."
        )
    return (
        f"{what} {source} has a header line ({lines[0]!r}) but no pairs: add one line per pair below it, a "
        f"sentence1, a sentence2 and a score {separated}."
    )


def _separator_problem(source: str, what: str, columns: list[str] | None = None) -> str | None:
    """Where a delimited-text file of pairs looks separated by another character than its suffix is read with (a
    .csv of ';' or tabs, a .tsv of commas, a .txt of tabs), what is wrong and the fix; else None."""
    found = _first_lines(source, 1)
    if not found or not found[1]:
        return None
    suffix, (first,) = found
    expected = SUFFIX_SEPARATORS[suffix]
    enough = len(PAIR_COLUMNS) - 1  # separators in a line of three fields
    if expected is not None and first.count(expected) >= enough:
        return None  # its own separator is there: the problem is something else
    separator = next((sep for sep in SEPARATORS if sep != expected and first.count(sep) >= enough), None)
    if separator is None:
        return None
    read = {",": "with commas", "\t": "with tabs", None: "as plain text, one row per line"}[expected]
    if columns and len(columns) == 1:
        result = f"it reads as one column, {columns[0]!r}, instead of the columns sentence1, sentence2, score"
    else:
        result = "it does not read as the columns sentence1, sentence2, score"
    if separator in ("\t", ","):
        other = {"\t": (".tsv (tab-separated)", "commas"), ",": (".csv (comma-separated)", "tabs")}[separator]
        own = expected is not None  # a .csv or .tsv can also keep its suffix and change its separator
        fix = f"name the file {other[0]}" + (f", or separate the fields with {other[1]}" if own else "")
    else:
        fix = (
            "separate the fields with commas in a .csv file (a sentence that holds a comma in double quotes), or "
            "with tabs in a .tsv file"
        )
    return (
        f"{what} {source}: its lines look separated by {SEPARATORS[separator]} (first line {first!r}), but a "
        f"{suffix} file is read {read}, so {result}. Fix: {fix}."
    )


def _score(value: object, source: str, row: int, what: str) -> float:
    try:
        score = float(value)  # numbers, and numbers written as text
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        raise ValueError(f"{what} {source}, row {row}: score {value!r} is not a number.")
    return score
