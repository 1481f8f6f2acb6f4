"""hybridnb.studies.takeaways: the sentences under the notebooks' tables say what the numbers say."""

import pandas as pd

from hybridnb.studies import takeaways


def _block(mono, cross, multi, rd):
    return {"mono": {"map": {"value": mono}}, "cross": {"map": {"value": cross}}, "multi": {"map": {"value": multi}},
            "rank_distance": {"value": rd}}


def test_zero_shot_orders_the_settings_and_explains_the_pooled_one():
    results = {"datasets": {"xquad-r": _block(0.742, 0.593, 0.212, 1512.7)}}
    [sentence] = takeaways.zero_shot(results, "e5")
    assert sentence.startswith("On xquad-r, zero-shot e5 retrieves best within one language (mono) 0.742, then "
                               "across languages (cross) 0.593, then in the pooled multilingual setting (multi) 0.212")
    assert "rank distance 1513" in sentence


def test_run_vs_zero_shot_lists_gains_and_losses_and_says_it_is_one_seed():
    results = {"training": {"strategy": "hybrid", "steps": 20, "best_step": 20},
               "datasets": {"xquad-r": _block(0.715, 0.603, 0.407, 482.7)}}
    zs = {"datasets": {"xquad-r": _block(0.742, 0.593, 0.212, 1512.7)}}
    [sentence] = takeaways.run_vs_zero_shot(results, zs)
    assert "better on cross mAP +0.010, multi mAP +0.195, rank distance -1030" in sentence
    assert "worse on mono mAP -0.027" in sentence and "one seed" in sentence
    assert "longer training may still help" in sentence  # the best step is the last one
    assert "no zero-shot result" in takeaways.run_vs_zero_shot(results, None)[0]


def test_backbones_name_the_strongest_and_weakest_and_the_significant_gains():
    frame = pd.DataFrame([{"backbone": b, "dataset": "xquad-r", "setting": "multi", "mAP": v, "low": v, "high": v}
                          for b, v in (("e5", 0.21), ("labse", 0.35), ("bm25", float("nan")), ("use", 0.30))])
    gains = pd.DataFrame([
        {"backbone": "e5", "dataset": "xquad-r", "comparison": "hybrid - mono", "column": "multi map", "diff": 0.1,
         "low": 0.08, "high": 0.12, "p_value": 0.001},
        {"backbone": "e5", "dataset": "xquad-r", "comparison": "hybrid - mono", "column": "mono map",
         "diff": -0.01, "low": -0.02, "high": -0.001, "p_value": 0.01},
        {"backbone": "e5", "dataset": "xquad-r", "comparison": "hybrid - mono", "column": "rank distance ↓",
         "diff": -200.0, "low": -250.0, "high": -150.0, "p_value": 0.001},
        {"backbone": "e5", "dataset": "xquad-r", "comparison": "hybrid - cross", "column": "multi map",
         "diff": 0.001, "low": -0.01, "high": 0.01, "p_value": 0.6},
        {"backbone": "e5", "dataset": "xquad-r", "comparison": "hybrid - zero-shot", "column": "multi map",
         "diff": 0.3, "low": 0.2, "high": 0.4, "p_value": 0.001}])
    lines = takeaways.backbones(frame, gains)
    assert lines[0].startswith("Zero-shot on xquad-r, labse is the strongest backbone in multi mAP (0.350) and e5 "
                               "the weakest (0.210) of the 3")
    assert lines[1] == ("e5 on xquad-r, hybrid vs mono: better on multi map +0.100, rank distance ↓ -200.0; worse "
                        "on mono map -0.010; the other 0 columns within noise (p >= 0.05, one seed).")
    assert lines[2].endswith("better on nothing; worse on nothing; the other 1 columns within noise (p >= 0.05, "
                             "one seed).")
    assert len(lines) == 3  # "hybrid - zero-shot" is a gain over the start, not a baseline


def test_image_text_compares_the_best_strategy_with_chance_the_others_and_the_unseen_languages():
    def system():
        return {"results": {"kind": "image-text trained", "data": {"items": {"test": 400}}}}

    def entry(mean, lo, hi, seeds=3):
        return {"mean": mean, "low": lo, "high": hi, "per_seed": [mean] * seeds}

    systems = {"zero-shot": {"results": {"kind": "image-text zero-shot"}}, "mono": system(), "hybrid": system()}
    summaries = {"zero-shot": {"t2i R@10": None},
                 "mono": {"t2i R@10": entry(0.11, 0.08, 0.14), "t2i R@10 trained": entry(0.12, 0.1, 0.14),
                          "t2i R@10 unseen": entry(0.08, 0.05, 0.11)},
                 "hybrid": {"t2i R@10": entry(0.17, 0.13, 0.21), "t2i R@10 trained": entry(0.2, 0.17, 0.23),
                            "t2i R@10 unseen": entry(0.1, 0.07, 0.13)}}
    first, second = takeaways.image_text(systems, summaries)
    assert first.startswith("Text→image R@10 (mean of 3 seeds): hybrid is best at 0.170 [0.130, 0.210], 6.8x chance "
                            "(10/400")
    assert "mono is lowest at 0.110, and the intervals overlap" in first
    assert second == ("hybrid on the caption languages never trained on: 0.100 [0.070, 0.130], against 0.200 on "
                      "the trained ones.")
    summaries["mono"]["t2i R@10"] = entry(0.05, 0.03, 0.07)
    assert "outside the best one's interval" in takeaways.image_text(systems, summaries)[0]
    summaries["hybrid"]["t2i R@10 unseen"] = None  # every language trained on: no second sentence
    assert len(takeaways.image_text(systems, summaries)) == 1
