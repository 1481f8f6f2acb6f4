"""hybridnb.paper_numbers: the shipped file holds no invented number; a transcription is checked and printed."""

from __future__ import annotations

import pytest
import yaml

from hybridnb import compare, paper_numbers, reporting

ROWS = [  # made-up values: they test the plumbing, they are not the paper's
    {"model": "xlm-roberta-base", "train": "mmarco", "dataset": "xquad-r", "strategy": "mono",
     "mono_map": 60.0, "cross_map": 40.0, "multi_map": 30.0, "rank_distance": 300},
    {"model": "xlm-roberta-base", "train": "mmarco", "dataset": "xquad-r", "strategy": "cross",
     "mono_map": 58.0, "cross_map": 50.0, "multi_map": 45.0, "rank_distance": 100},
    {"model": "xlm-roberta-base", "train": "mmarco", "dataset": "xquad-r", "strategy": "hybrid",
     "mono_map": 61.5, "cross_map": 49.0, "multi_map": 44.0, "rank_distance": 320, "mono_r@1": None},
    {"model": "labse", "train": "mmarco", "dataset": "mlqa-r", "strategy": "hybrid", "multi_map": 40.0},
]


def write(tmp_path, **doc):
    path = tmp_path / "numbers.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_the_shipped_file_is_empty_and_loads():
    frame, source = paper_numbers.load()
    assert frame.empty and source is None
    assert paper_numbers.markdown(frame, source) == []
    text = paper_numbers.PAPER_NUMBERS.read_text(encoding="utf-8")
    assert all(v in text for v in paper_numbers.VALUES)  # the file documents every key it accepts


def test_the_yaml_keys_are_the_report_columns():
    assert sorted(paper_numbers.value_name(s, m) for s, m in compare.COLUMNS) == sorted(paper_numbers.VALUES)
    assert compare.PAPER_DIRECTION is paper_numbers.PAPER_DIRECTION


def test_a_transcription_is_printed_labelled_with_the_claims_in_its_numbers(tmp_path):
    frame, source = paper_numbers.load(write(tmp_path, source="Table 1", scale="percent", rows=ROWS))
    assert len(frame) == 4 and source == "Table 1"
    text = "\n".join(paper_numbers.markdown(frame, source))
    assert "Transcribed by hand from the paper (Table 1); not measured here" in text
    assert "### mlqa-r: the paper's numbers" in text and "### xquad-r: the paper's numbers" in text
    assert "| xlm-roberta-base | mmarco | hybrid | 61.5 | 49 | 44 | 320 |" in text  # columns with a value only
    claims = paper_numbers.directions(frame)
    assert claims == [
        "xlm-roberta-base (mmarco → xquad-r), mono_map: hybrid 61.5 vs X-Y 58 (+3.5, as claimed).",
        "xlm-roberta-base (mmarco → xquad-r), cross_map: hybrid 49 vs X-X-mono 40 (+9, as claimed).",
        "xlm-roberta-base (mmarco → xquad-r), multi_map: hybrid 44 vs X-X-mono 30 (+14, as claimed).",
        "xlm-roberta-base (mmarco → xquad-r), rank_distance: hybrid 320 vs X-X-mono 300 (+20, against the claim).",
    ]  # labse has no baseline rows: no claim line


@pytest.mark.parametrize("doc, message", [
    ({"source": "T1", "rows": ROWS, "units": "%"}, "unknown top-level keys"),
    ({"rows": ROWS}, "rows without a source"),
    ({"source": "T1", "scale": "permille", "rows": ROWS}, "scale must be"),
    ({"source": "T1", "rows": [{**ROWS[0], "strategy": "bilingual"}]}, "unknown strategy 'bilingual'"),
    ({"source": "T1", "rows": [{**ROWS[0], "mono_map": "61.2*"}]}, "mono_map must be a number or null"),
    ({"source": "T1", "rows": [{**ROWS[0], "mono_mrr": 1.0}]}, r"unknown \['mono_mrr'\]"),
    ({"source": "T1", "rows": [{k: v for k, v in ROWS[0].items() if k != "dataset"}]}, r"missing \['dataset'\]"),
    ({"source": "T1", "rows": [ROWS[0], ROWS[0]]}, "appears twice"),
    ({"source": "T1", "rows": ["xlmr hybrid 61"]}, "expected a mapping"),
])
def test_a_malformed_transcription_stops_with_a_clear_error(tmp_path, doc, message):
    with pytest.raises(ValueError, match=message):
        paper_numbers.load(write(tmp_path, **doc))


def minimal_systems() -> dict:
    model = {"name": "m", "max_length": 8, "candidate_mode": "sentence"}
    training = {"steps": 1, "batch_size": 2, "train_data": "mlqa-r", "train_items": 3, "dropped_overlap": 0,
                "seed": 0, "best_step": 1, "best_val_loss": 1.0}
    return {"zero-shot": {"results": {"model": model}}, "hybrid": {"results": {"training": training}}}


def test_report_prints_the_paper_block_only_from_a_filled_file(tmp_path):
    prov = reporting.provenance("ci")
    empty = compare.report_markdown({}, minimal_systems(), {}, {}, [], prov)
    assert "## The paper's numbers" in empty and "hybridnb/paper_numbers.yaml" in empty
    assert "Transcribed by hand" not in empty
    filled = compare.report_markdown({}, minimal_systems(), {}, {}, [], prov,
                                     write(tmp_path, source="Table 1", rows=ROWS))
    assert "Transcribed by hand from the paper (Table 1)" in filled and "not reproduced here" not in filled
    assert filled.index("## The paper's numbers") < filled.index("## Figures")
