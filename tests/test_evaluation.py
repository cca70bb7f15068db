"""Per-image scores on hand-made cases, ensembles, and which comparisons the evaluation makes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from faceattr.config import EvaluateConfig
from faceattr.evaluation.comparisons import compare, comparison_pairs
from faceattr.evaluation.runs import Variants, add_ensembles
from faceattr.evaluation.scoring import breakdowns, per_image_scores, summarise
from faceattr.train.data import FaceTensors

EDGES = (10.0, 20.0, 40.0)


def _data() -> FaceTensors:
    lm = torch.tensor([[10.0, 10.0], [20.0, 10.0], [15.0, 15.0], [11.0, 20.0], [19.0, 20.0]])
    return FaceTensors(
        images=torch.zeros(4, 3, 32, 32, dtype=torch.uint8),
        gender=torch.tensor([0, 1, 1, -1]),
        age=torch.tensor([5.0, 25.0, float("nan"), 50.0]),
        landmarks=lm.expand(4, 5, 2).clone(),
        identity=torch.zeros(4, dtype=torch.long),
        identity_names=("a",),
        attributes=torch.tensor([[1.0, 0.0], [1.0, float("nan")], [0.0, 0.0], [float("nan"), float("nan")]]),
        attribute_names=("smiling", "beard"),
    )


def test_per_image_scores_by_hand() -> None:
    data = _data()
    pred = {
        "gender_prob": np.array([0.2, 0.4, 0.9, 0.5]),
        "age": np.array([9.0, 45.0, 30.0, 50.0]),
        "landmarks": data.landmarks.numpy() + np.array([1.0, 0.0]),  # every point 1 px right; eye distance 10
        "attr_prob": np.array([[0.9, 0.1], [0.2, 0.7], [0.1, 0.9], [0.5, 0.5]]),
    }
    s = per_image_scores(pred, data, EDGES, 5.0)
    np.testing.assert_array_equal(s["gender_correct"], [1, 0, 1, np.nan])
    np.testing.assert_array_equal(s["age_abs_err"], [4, 20, np.nan, 0])
    np.testing.assert_array_equal(s["age_cs"], [1, 0, np.nan, 1])
    np.testing.assert_array_equal(s["age_group_correct"], [1, 0, np.nan, 1])  # 25 is in [20, 40), 45 is 40+
    np.testing.assert_array_equal(s["age_group_abs_diff"], [0, 1, np.nan, 0])
    np.testing.assert_allclose(s["landmark_nme"], [0.1] * 4)
    np.testing.assert_array_equal(s["attr_acc"], [1.0, 0.0, 0.5, np.nan])
    m = summarise(s, 5.0)
    assert m["gender_acc"] == pytest.approx(2 / 3) and m["age_mae"] == pytest.approx(8.0)
    assert m["age_cs5"] == pytest.approx(2 / 3) and m["attr_acc"] == pytest.approx(0.5)


def test_attribute_breakdown_sets_each_attribute_beside_its_training_majority() -> None:
    data = _data()  # smiling: test labels 1, 1, 0 (one unknown); beard: 0, 0 (rows 0 and 2; two unknown)
    train = replace(data, attributes=torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
    pred = {"attr_prob": np.array([[0.9, 0.1], [0.8, 0.7], [0.1, 0.2], [0.5, 0.5]])}
    per = breakdowns({0: pred}, data, EDGES, data.attribute_names, train)["attributes"]
    # training majority: smiling 0 (1 of 4 positive), beard 1 (3 of 4): right on 1 of 3 and 0 of 2 test labels
    assert per["smiling"]["majority_acc"] == pytest.approx(1 / 3) and per["beard"]["majority_acc"] == 0.0
    assert per["smiling"]["acc"] == 1.0 and per["beard"]["acc"] == 1.0  # the model gets all five right
    assert "majority_acc" not in breakdowns({0: pred}, data, EDGES, data.attribute_names)["attributes"]["beard"]


def test_group_head_predictions_use_the_group_probabilities() -> None:
    data = _data()
    probs = np.eye(4)[[0, 2, 1, 1]]
    s = per_image_scores({"age": np.array([1.0, 1.0, 1.0, 1.0]), "age_group_prob": probs}, data, EDGES, 5.0)
    np.testing.assert_array_equal(s["age_group_correct"], [1, 1, np.nan, 0])
    np.testing.assert_array_equal(s["age_group_abs_diff"], [0, 0, np.nan, 2])


def test_ensemble_averages_member_probabilities_per_seed() -> None:
    data = _data()
    runs = Variants({}, {}, {})
    members = {"m1": [0.1, 0.9, 0.6, 0.5], "m2": [0.9, 0.1, 0.2, 0.5]}  # truth: male, female, female, ?
    for name, p in members.items():
        for seed in (0, 1):
            pred = {"gender_prob": np.array(p), "age": np.array([5.0, 25.0, 0.0, 50.0 + 10 * seed])}
            runs.predictions.setdefault(name, {})[seed] = pred
            runs.scores.setdefault(name, {})[seed] = per_image_scores(pred, data, EDGES, 5.0)
    add_ensembles(runs, {"both": ("m1", "m2"), "ghost": ("m1", "m9")}, data, EDGES, 5.0)
    np.testing.assert_allclose(runs.predictions["both"][1]["gender_prob"], [0.5, 0.5, 0.4, 0.5])
    np.testing.assert_array_equal(runs.scores["both"][0]["gender_correct"], [0, 1, 0, np.nan])
    assert "m9" in runs.not_run["ghost"]
    rows = compare(runs, [("both", "m1", "ensemble vs member", ("gender_acc",))], EvaluateConfig(bootstrap=200))
    assert rows[0]["diff"] == pytest.approx(-2 / 3) and rows[0]["images"] == 3


def test_comparisons_are_the_papers_questions() -> None:
    names = [
        "face_resnet18-identity-gender+age+landmarks",
        "face_resnet18-none-gender+age+landmarks",
        "resnet18-imagenet-gender+age+landmarks",
        "resnet18-none-gender+age+landmarks",
        "face_resnet18-identity-gender",
        "face_resnet18-identity-gender+age+landmarks-frac10",
        "face_resnet18-identity-gender+age+landmarks-dldl",
        "attn_cnn-none-gender+age-group",
        "attn_cnn-none-gender+age-group-cond",
        "face_resnet18-none-gender+age+landmarks-frac10",
    ]
    pairs = {
        (a, b): (q, m) for a, b, q, m in comparison_pairs(names, {"ens": ("attn_cnn-none-gender+age-group", names[3])})
    }
    assert pairs[(names[0], names[1])] == ("identity pretraining vs none", ("gender_acc", "age_mae", "landmark_nme"))
    assert pairs[(names[2], names[3])][0] == "imagenet pretraining vs none"
    assert pairs[(names[0], names[2])][0] == "identity vs ImageNet pretraining"
    assert pairs[(names[0], names[4])] == ("multi-task vs fewer tasks", ("gender_acc",))
    assert pairs[(names[6], names[0])] == ("dldl age head vs regression", ("age_mae",))
    assert pairs[(names[8], names[7])] == (
        "gender-conditioned age vs plain",
        ("gender_acc", "age_mae", "age_group_acc"),
    )
    assert pairs[("ens", names[3])][0] == "ensemble vs member"
    assert [p for p in pairs if names[5] in p] == [(names[5], names[9])], "a fraction: only pretraining, same fraction"
    assert (
        pairs[(names[5], names[9])][0] == "data efficiency: identity pretraining vs none at 10 % of the training images"
    )
    assert (names[1], names[0]) not in pairs and (names[4], names[0]) not in pairs, "one direction per question"


def test_holm_corrects_within_each_question_so_an_ensemble_leaves_table_1_alone() -> None:
    """Table 1's verdict must not depend on how many ensembles the second paper adds. Identity vs
    none differs a little (p about 0.02 alone); ten ensemble comparisons with tiny p-values made
    Holm over everything reject fewer of Table 1's (its p then faced alpha / 11)."""
    rng = np.random.default_rng(0)
    n = 400
    truth = rng.normal(0, 1, n)
    runs = Variants({}, {}, {})

    def add(name: str, shift: float, noise: float) -> None:
        err = np.abs(truth + shift + rng.normal(0, noise, n))
        runs.scores[name] = {0: {"age_abs_err": err}}

    add("face_resnet18-identity-gender+age+landmarks", 0.0, 0.3)
    runs.scores["face_resnet18-none-gender+age+landmarks"] = {
        0: {
            "age_abs_err": runs.scores["face_resnet18-identity-gender+age+landmarks"][0]["age_abs_err"]
            + 0.05
            + rng.normal(0, 0.3, n)
        }
    }
    table1 = [
        (
            "face_resnet18-identity-gender+age+landmarks",
            "face_resnet18-none-gender+age+landmarks",
            "identity pretraining vs none",
            ("age_mae",),
        )
    ]
    cfg = EvaluateConfig(bootstrap=2000)
    alone = compare(runs, table1, cfg)
    assert alone[0]["family"] == "Table 1: pretraining" and alone[0]["holm_family_size"] == 1
    for i in range(10):
        add(f"m{i}", 1.0, 0.3)
    ensembles = [
        (f"m{i}", "face_resnet18-identity-gender+age+landmarks", "ensemble vs member", ("age_mae",)) for i in range(10)
    ]
    both = compare(runs, table1 + ensembles, cfg)
    assert both[0]["significant_holm"] == alone[0]["significant_holm"]
    assert alone[0]["significant"] and alone[0]["p"] > 0.05 / 11, "the case must be one a wide family would flip"
    assert all(r["family"].startswith("second paper") and r["holm_family_size"] == 10 for r in both[1:])


def test_table_1_lists_other_trunks_and_their_comparisons() -> None:
    """A run of dlib's trunk against the same network from scratch (results/dlib_utkface): its rows
    and its paired comparisons are in Table 1, not left out as 'no such pairs'."""
    import json
    from pathlib import Path

    from faceattr.report import TABLE1_QUESTIONS, significance, table1

    ev = json.loads((Path(__file__).parents[1] / "results/dlib_utkface/metrics/evaluate_embedding.json").read_text())
    table = table1(ev, 2)
    # the best test mean of each column is bold: dlib's trunk on gender and age, from scratch on NME
    assert "| dlib_resnet | dlib's (7,485 people, about 3 million faces) | **91.70** ± 0.00" in table
    assert "**0.0618** ± 0.0000" in table
    assert "| dlib_resnet | none | 85.79" in table
    lines = significance(ev, 2, TABLE1_QUESTIONS)
    rows = [line for line in "\n".join(lines).splitlines() if line.startswith("| dlib pretraining vs none |")]
    assert len(rows) == 3 and {r.split(" | ")[3] for r in rows} == {"gender acc. %", "age MAE (years)", "landmark NME"}
    assert not any("no such pairs" in line for line in lines)
