"""Hybrid batches in sentence-transformers' trainer: :class:`HybridBatchSampler` behind its ``batch_sampler`` hook.

sentence-transformers (>= 5) builds its training DataLoader from ``args.batch_sampler``: a
``DefaultBatchSampler`` subclass or a callable, called as ``f(dataset, batch_size=, drop_last=,
valid_label_columns=, generator=, seed=)``, that yields lists of row indices of the training dataset. Its data
collator then tokenises *every* column of those rows and hands them to the loss in column order
(``MultipleNegativesRankingLoss``: anchor, positive, negatives). So a row must already be one training pair.

Data layout (:func:`pair_dataset` builds it from a :class:`~hybridnb.data.parallel_table.ParallelTable`): one row
per item and ordered language pair (X, Y) the item has, X == Y included:

    item              the item id, shared by the language versions of one query (parallel = same item)
    query_language    X
    passage_language  Y
    anchor            the query in X
    positive          its positive passage in Y
    negative_1 ..     hard negatives in Y (optional; as many columns as wanted, the same for every row)

An item available in k languages has k * k rows (k mono rows X == Y, k * (k - 1) cross rows). The first three
columns are the *layout*: the sampler reads them, the loss must not see them, so the trainer gets
:func:`training_columns` of the dataset (anchor, positive, negatives) and the sampler gets the full dataset:

    pairs = pair_dataset(table, n_hard_negatives=1)
    args = SentenceTransformerTrainingArguments(..., batch_sampler=hybrid_batch_sampler(pairs, alpha=0.5))
    trainer = SentenceTransformerTrainer(model, args, train_dataset=training_columns(pairs), loss=...)

How a batch is drawn: exactly as :class:`hybridnb.training.sampling.HybridBatchSampler` draws it (its
docstring, numbered): this module builds that sampler on the layout's availability matrix and only maps its
``(item, query language, passage language)`` triples to rows. So ``mono`` batches are one language, ``cross``
batches pair a query with its passage in another language, the kind of each step follows the strategy's
mixture, and a batch never holds an item twice (no parallel version of a positive is an in-batch negative).

Several processes (accelerate / torchrun): every rank builds the same sampler (the trainer passes the same
``args.seed`` everywhere) and yields, per step, the ``world_size`` shards of one global batch of
``batch_size * world_size`` pairs, in rank order. accelerate's ``BatchSamplerShard`` (``split_batches=False``,
the default) gives rank r every ``world_size``-th list starting at r, i.e. shard r of every step, so all ranks
train on the same kind (and, for ``mono``, the same language) at the same step, on disjoint items. With
accelerate's ``split_batches=True`` pass ``split_batches=True`` here: each step is then one list of
``batch_size`` rows that accelerate cuts into contiguous shards (the same shards).

Epochs and resume: the stream of steps is a pure function of (seed, layout, strategy, step); epoch ``e``
(``set_epoch``, called by the trainer) is steps ``e * steps_per_epoch .. (e + 1) * steps_per_epoch - 1``. So a
resumed trainer (a fresh process: ``set_epoch(e)``, then the first batches skipped) sees the batches an
uninterrupted run would have seen. Known gap (transformers 5.25): when a *multi-process* run resumes in the
middle of an epoch > 0, transformers' ``set_epoch`` does not reach a sampler wrapped in both
``SkipBatchSampler`` and ``BatchSamplerShard``; set ``steps_per_epoch`` >= ``max_steps`` there (one epoch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hybridnb.data.parallel_table import ParallelTable
from hybridnb.training.batch_kinds import parse_strategy
from hybridnb.training.sampling import HybridBatchSampler

__all__ = ["LAYOUT_COLUMNS", "pair_dataset", "training_columns", "pair_layout", "PairLayout",
           "HybridSTBatchSampler", "hybrid_batch_sampler"]

LAYOUT_COLUMNS = ("item", "query_language", "passage_language")


def _default_batch_sampler():
    try:
        from sentence_transformers.base.sampler import DefaultBatchSampler  # sentence-transformers >= 6
    except ImportError:
        from sentence_transformers.sampler import DefaultBatchSampler  # 5.x

    return DefaultBatchSampler


# --------------------------------------------------------------------------------------------------
# the data layout
# --------------------------------------------------------------------------------------------------


def pair_dataset(table: ParallelTable, n_hard_negatives: int = 0):
    """The layout above as a ``datasets.Dataset``, rows item by item (table order), then X, then Y.

    Passages must be plain texts (a table built with ``candidate_mode="sentence"``): a column holds one
    text per row. Raises ValueError for a (sentence, context) passage or an item with fewer than
    ``n_hard_negatives`` hard negatives in a language it has.
    """
    import datasets

    if isinstance(n_hard_negatives, bool) or not isinstance(n_hard_negatives, int) or n_hard_negatives < 0:
        raise ValueError(f"n_hard_negatives must be a non-negative int, got {n_hard_negatives!r}")
    available = table.available()  # (n_items, L)
    cols: dict[str, list] = {name: [] for name in (*LAYOUT_COLUMNS, "anchor", "positive")}
    negs: list[list[str]] = [[] for _ in range(n_hard_negatives)]
    for i, item in enumerate(table.ids):
        langs = [g for g, ok in zip(table.languages, available[i]) if ok]
        for x in langs:
            for y in langs:
                positive = table.positives[y][i]
                if not isinstance(positive, str):
                    raise ValueError(f"item {item!r}: the positive in {y!r} is a (sentence, context) pair; "
                                     "a sentence-transformers column holds one text (build the table with "
                                     "candidate_mode='sentence')")
                hard = table.hard_negatives[y][i]
                if len(hard) < n_hard_negatives:
                    raise ValueError(f"item {item!r} has {len(hard)} hard negative(s) in {y!r}, "
                                     f"{n_hard_negatives} requested")
                for k in range(n_hard_negatives):
                    if not isinstance(hard[k], str):
                        raise ValueError(f"item {item!r}: a hard negative in {y!r} is a (sentence, context) pair")
                    negs[k].append(hard[k])
                for name, value in zip(cols, (item, x, y, table.queries[x][i], positive)):
                    cols[name].append(value)
    cols.update({f"negative_{k + 1}": negs[k] for k in range(n_hard_negatives)})
    return datasets.Dataset.from_dict(cols)


def training_columns(dataset):
    """The dataset without the layout columns: what the trainer (and so the loss) gets."""
    missing = [c for c in LAYOUT_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"not a pair dataset: columns {missing} missing (see hybridnb.integrations.st_sampler)")
    return dataset.remove_columns(list(LAYOUT_COLUMNS))


class PairLayout:
    """The layout columns of a pair dataset as the sampler needs them: availability and the row of each pair.

    ``available`` (n_items, L): the item has a mono row (i, X, X). ``row_of(pairs)`` maps sampler triples
    ``(item index, query language index, passage language index)`` (B, 3) to row indices (B,).
    """

    def __init__(self, items: Sequence[Any], query_languages: Sequence[str], passage_languages: Sequence[str],
                 languages: Sequence[str] | None = None):
        q, p = np.asarray(query_languages, dtype=object), np.asarray(passage_languages, dtype=object)
        if not (len(items) == len(q) == len(p)) or len(q) == 0:
            raise ValueError(f"layout columns must be non-empty and of equal length, got {len(items)}, {len(q)}, "
                             f"{len(p)} entries")
        seen = sorted(set(q.tolist()) | set(p.tolist()))
        self.languages = list(languages) if languages is not None else seen
        unknown = sorted(set(seen) - set(self.languages))
        if unknown:
            raise ValueError(f"the layout has rows in language(s) {unknown} not in languages={self.languages}")
        self.item_ids = list(dict.fromkeys(items))  # first appearance order
        item_code = {item: n for n, item in enumerate(self.item_ids)}
        lang_code = {g: n for n, g in enumerate(self.languages)}
        L = len(self.languages)
        i = np.fromiter((item_code[x] for x in items), np.int64, len(items))
        x = np.fromiter((lang_code[g] for g in q), np.int64, len(q))
        y = np.fromiter((lang_code[g] for g in p), np.int64, len(p))
        keys = (i * L + x) * L + y
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]
        dup = np.flatnonzero(self._keys[1:] == self._keys[:-1])
        if dup.size:
            r = int(self._order[dup[0] + 1])
            raise ValueError(f"row {r} repeats the pair (item {items[r]!r}, {q[r]} -> {p[r]}): each (item, query "
                             "language, passage language) must have one row")
        self.available = np.zeros((len(self.item_ids), L), dtype=bool)
        mono = x == y
        self.available[i[mono], x[mono]] = True
        orphan = ~(self.available[i, x] & self.available[i, y])
        if orphan.any():
            r = int(np.flatnonzero(orphan)[0])
            raise ValueError(f"row {r} (item {items[r]!r}, {q[r]} -> {p[r]}): the item has no mono row in "
                             f"{q[r] if not self.available[i[r], x[r]] else p[r]!r}; every language of an item "
                             "needs its (X, X) row")
        self._n_cross = np.bincount(i[~mono], minlength=len(self.item_ids))

    @property
    def n_rows(self) -> int:
        return int(len(self._keys))

    def check_cross_complete(self) -> None:
        """Every item has a row for each ordered pair X != Y of its languages (cross batches draw any)."""
        k = self.available.sum(axis=1)
        short = np.flatnonzero(self._n_cross != k * (k - 1))
        if short.size:
            n = int(short[0])
            langs = [g for g, ok in zip(self.languages, self.available[n]) if ok]
            L = len(self.languages)
            have = set(self._keys[(self._keys // (L * L)) == n].tolist())
            missing = next((a, b) for a in langs for b in langs
                           if a != b and (n * L + self.languages.index(a)) * L + self.languages.index(b) not in have)
            raise ValueError(f"item {self.item_ids[n]!r} has languages {langs} but no row {missing[0]} -> "
                             f"{missing[1]} ({len(short)} item(s) lack cross rows); cross batches need every "
                             "ordered pair of an item's languages")

    def row_of(self, pairs: np.ndarray) -> np.ndarray:
        L = len(self.languages)
        keys = (pairs[:, 0] * L + pairs[:, 1]) * L + pairs[:, 2]
        pos = np.searchsorted(self._keys, keys)
        assert (pos < len(self._keys)).all() and (self._keys[np.minimum(pos, len(self._keys) - 1)] == keys).all()
        return self._order[pos]


def pair_layout(dataset, languages: Sequence[str] | None = None) -> PairLayout:
    """The :class:`PairLayout` of a pair dataset (its three layout columns, read once)."""
    missing = [c for c in LAYOUT_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the layout dataset lacks column(s) {missing}; expected {list(LAYOUT_COLUMNS)} "
                         "(see hybridnb.integrations.st_sampler)")
    cols = dataset.select_columns(list(LAYOUT_COLUMNS))[:]
    return PairLayout(cols["item"], cols["query_language"], cols["passage_language"], languages)


# --------------------------------------------------------------------------------------------------
# the batch sampler
# --------------------------------------------------------------------------------------------------


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class HybridSTBatchSampler(_default_batch_sampler()):
    """sentence-transformers batch sampler drawing hybrid batches (see the module docstring).

    ``dataset``: the training dataset (its rows are the layout's rows); ``layout``: the pair dataset or its
    :class:`PairLayout` (default: read from ``dataset`` itself). ``batch_size``: pairs per rank and step.
    ``strategy``, ``alpha``, ``language_sampling``: as :class:`HybridBatchSampler`. ``seed``: the trainer's
    ``args.seed`` unless the factory fixes one. ``world_size``: default the process group's size.
    ``steps_per_epoch``: default one pass over the items (``n_items // global batch``, at least 1).
    ``drop_last``, ``valid_label_columns`` and ``generator`` are accepted for the hook and unused: every batch
    is full, and the draws come from numpy generators keyed by (seed, step), not from torch's generator.
    """

    def __init__(self, dataset, batch_size: int, drop_last: bool = False, valid_label_columns=None, generator=None,
                 seed: int = 0, *, layout=None, strategy: str | Mapping[str, float] = "hybrid",
                 alpha: float | None = 0.5, language_sampling: str | float = "uniform",
                 languages: Sequence[str] | None = None, world_size: int | None = None,
                 split_batches: bool = False, steps_per_epoch: int | None = None):
        super().__init__(dataset, batch_size=batch_size, drop_last=drop_last,
                         valid_label_columns=valid_label_columns, generator=generator, seed=seed)
        if layout is None:
            layout = dataset
        self.layout = layout if isinstance(layout, PairLayout) else pair_layout(layout, languages)
        if len(dataset) != self.layout.n_rows:
            raise ValueError(f"the training dataset has {len(dataset)} rows but the layout has "
                             f"{self.layout.n_rows}: give the trainer training_columns(pairs) of the same pairs")
        weights = parse_strategy(strategy, alpha)
        if "cross" in weights:
            self.layout.check_cross_complete()
        self.world_size = _world_size() if world_size is None else int(world_size)
        self.split_batches = bool(split_batches)
        self.global_batch_size = batch_size if self.split_batches else batch_size * self.world_size
        self.sampler_ = HybridBatchSampler(self.layout.available, self.layout.languages, self.global_batch_size,
                                           strategy=strategy, alpha=alpha, language_sampling=language_sampling,
                                           seed=seed, item_ids=self.layout.item_ids)
        n_items = len(self.layout.item_ids)
        self.steps_per_epoch = max(1, n_items // self.global_batch_size) if steps_per_epoch is None \
            else int(steps_per_epoch)
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}")
        self._states = {0: self.sampler_.state_dict()}  # sampler states at epoch starts (seek by replay)

    # the stream ---------------------------------------------------------------------------------------

    def _seek(self, step: int) -> None:
        """Put the sampler at ``step``: from the nearest saved state at or before it, replaying the draws."""
        if self.sampler_.step != step:
            start = max(s for s in self._states if s <= step)
            self.sampler_.load_state_dict(self._states[start])
            while self.sampler_.step < step:
                self.sampler_.next_global_batch()
        self._states[step] = self.sampler_.state_dict()

    def global_batches(self, epoch: int | None = None):
        """The epoch's global batches (:class:`Batch` records of the whole step, all ranks together)."""
        epoch = self.epoch if epoch is None else epoch
        self._seek(epoch * self.steps_per_epoch)
        for _ in range(self.steps_per_epoch):
            yield self.sampler_.next_global_batch()

    def __iter__(self):
        b = self.global_batch_size // (1 if self.split_batches else self.world_size)
        for batch in self.global_batches():
            rows = self.layout.row_of(batch.pairs)
            if self.split_batches:
                yield rows.tolist()
            else:
                for r in range(self.world_size):
                    yield rows[r * b:(r + 1) * b].tolist()

    def __len__(self) -> int:
        return self.steps_per_epoch * (1 if self.split_batches else self.world_size)

    # state ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The underlying sampler's state (seed, step, pool cursors) and the epoch; JSON-able."""
        return {"epoch": self.epoch, "sampler": self.sampler_.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        state = json.loads(json.dumps(state))
        self.sampler_.load_state_dict(state["sampler"])
        self.epoch = int(state["epoch"])
        self._states[self.sampler_.step] = self.sampler_.state_dict()


class hybrid_batch_sampler:  # noqa: N801 (used like a function: batch_sampler=hybrid_batch_sampler(pairs))
    """The value for ``SentenceTransformerTrainingArguments(batch_sampler=...)``: hybrid batches over ``pairs``.

    ``pairs``: the pair dataset with its layout columns (the trainer gets :func:`training_columns` of it).
    The other arguments are :class:`HybridSTBatchSampler`'s; ``seed=None`` takes the trainer's ``args.seed``.
    The strategy and the layout are checked here, before any training.
    """

    def __init__(self, pairs, strategy: str | Mapping[str, float] = "hybrid", alpha: float | None = 0.5,
                 language_sampling: str | float = "uniform", languages: Sequence[str] | None = None,
                 seed: int | None = None, world_size: int | None = None, split_batches: bool = False,
                 steps_per_epoch: int | None = None):
        weights = parse_strategy(strategy, alpha)
        self.layout = pairs if isinstance(pairs, PairLayout) else pair_layout(pairs, languages)
        if "cross" in weights:
            self.layout.check_cross_complete()
        self.kwargs = dict(strategy=strategy, alpha=alpha, language_sampling=language_sampling,
                           world_size=world_size, split_batches=split_batches, steps_per_epoch=steps_per_epoch)
        self.seed = seed

    def __call__(self, dataset, batch_size: int, drop_last: bool = False, valid_label_columns=None,
                 generator=None, seed: int = 0) -> HybridSTBatchSampler:
        leaked = [c for c in LAYOUT_COLUMNS if c in getattr(dataset, "column_names", ())]
        if leaked:
            raise ValueError(f"the training dataset still has the layout column(s) {leaked}, which the collator "
                             "would tokenise and the loss take as texts: pass train_dataset=training_columns(pairs)")
        return HybridSTBatchSampler(dataset, batch_size, drop_last, valid_label_columns, generator,
                                    seed if self.seed is None else self.seed, layout=self.layout, **self.kwargs)

    def __repr__(self) -> str:
        return f"hybrid_batch_sampler(items={len(self.layout.item_ids)}, languages={self.layout.languages}, " \
               f"{self.kwargs}, seed={self.seed})"
