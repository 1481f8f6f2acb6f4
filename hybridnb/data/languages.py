"""The one check of a language list, and of a table's per-language columns.

Every loader that takes ``languages=`` (LAReQA tasks, raw-file fetching, mMARCO, parallel and image-text
tables, XTD10, Multi30K, OpenMoji-CLDR) calls :func:`check_languages`, so a bad list gets the same message
everywhere: what was wrong, for which dataset, and the valid codes. The training tables (text pairs and
image-caption pairs) check their item ids and per-language columns with :func:`check_item_columns`.

Relations: used by :mod:`hybridnb.data.sources`, :mod:`hybridnb.data.lareqa`, :mod:`hybridnb.data.mmarco`,
:mod:`hybridnb.data.parallel_table` and the image-text tables (:mod:`hybridnb.image_text.caption_table`,
:mod:`hybridnb.image_text.openmoji_cldr`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["check_languages", "check_item_columns", "language_counts", "check_every_language_used"]


def check_languages(languages: Sequence[str] | None, valid: Iterable[str], where: str) -> list[str]:
    """`languages` as a list, checked: a list (not a string) of distinct codes among `valid`, not empty.

    ``None`` means every valid language (in `valid`'s order); otherwise the given order is kept (callers that
    want a canonical order sort by `valid` themselves). `where` names the dataset or table in the message.
    """
    valid = list(valid)
    if languages is None:
        return valid
    if isinstance(languages, str):
        raise TypeError(f"languages must be a list of language codes, not the string {languages!r}")
    languages = list(languages)
    unknown = [g for g in languages if g not in valid]
    if unknown:
        raise ValueError(f"unknown language(s) {', '.join(map(repr, unknown))} for {where}; "
                         f"valid languages: {', '.join(valid)}")
    if not languages:
        raise ValueError(f"languages is empty; valid languages for {where}: {', '.join(valid)}")
    if len(set(languages)) != len(languages):
        raise ValueError(f"languages must not repeat a code, got {languages} for {where}")
    return languages


def check_item_columns(table: str, ids: Sequence[str], languages: Sequence[str],
                       columns: dict[str, dict[str, Sequence]], duplicate_ids_give: str) -> None:
    """Unique item ids (at least one), unique languages (at least one), and every column one entry per item.

    `columns` maps a column's name to ``{language: entries}``; each must have exactly the table's languages.
    `duplicate_ids_give` says why a repeated id is wrong for this table (it is in the message).
    """
    n = len(ids)
    if n == 0:
        raise ValueError(f"empty {table}: no items")
    if len(set(ids)) != n:
        raise ValueError(f"{table} ids are not unique (duplicated items give {duplicate_ids_give})")
    if not languages or len(set(languages)) != len(languages):
        raise ValueError(f"languages must be non-empty and unique, got {list(languages)}")
    for name, col in columns.items():
        if set(col) != set(languages):
            raise ValueError(f"{name} has languages {sorted(col)}, expected {sorted(languages)}")
        bad = [lang for lang in languages if len(col[lang]) != n]
        if bad:
            raise ValueError(f"{name} of language(s) {bad} do not have one entry per item ({n})")


def language_counts(languages: Sequence[str], available) -> dict[str, int]:
    """Items per language of a table's (n_items, n_languages) availability matrix (its ``available()``)."""
    return dict(zip(languages, available.sum(axis=0).tolist()))


def check_every_language_used(languages: Sequence[str], available, have_none: str) -> None:
    """Refuse a table with a language no item is available in (the sampler would draw it and find nothing);
    `have_none` finishes the message: ``language(s) ['de'] have <have_none>``."""
    empty = [lang for lang, k in language_counts(languages, available).items() if k == 0]
    if empty:
        raise ValueError(f"language(s) {empty} have {have_none}")
