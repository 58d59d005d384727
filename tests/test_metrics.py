"""Sleep-staging metrics on hand-computed cases (and one wiring check against scikit-learn), pooled vs per-fold aggregation, and the Key Results table."""
import csv
import json

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score

from probing.metrics import classification_metrics, pooled_and_per_fold
from probing.results import write_summary
from utils import STAGES


def test_metrics_wiring_agrees_with_scikit_learn():
    """Wiring only (scikit-learn's values): all five stages present, per-class order and confusion layout."""
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 400)
    y_pred = np.where(rng.random(400) < 0.7, y_true, rng.integers(0, 5, 400))
    m = classification_metrics(y_true, y_pred)
    assert m["n_epochs"] == 400
    assert [m["per_class_f1"][s] for s in STAGES] == pytest.approx(f1_score(y_true, y_pred, average=None, labels=range(5)))
    assert m["confusion"] == confusion_matrix(y_true, y_pred, labels=range(5)).tolist()


def test_metrics_of_a_three_stage_confusion_by_hand():
    """Confusion (rows true W, N1, N2; columns predicted) [[4, 1, 0], [1, 2, 1], [0, 1, 5]], 15 epochs."""
    confusion = [[4, 1, 0], [1, 2, 1], [0, 1, 5]]
    pairs = [(t, p) for t, row in enumerate(confusion) for p, count in enumerate(row) for _ in range(count)]
    y_true, y_pred = (np.array(v) for v in zip(*pairs))
    m = classification_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(11 / 15)
    # F1 = 2 TP / (row + column): W 8/10, N1 4/8, N2 10/12
    assert [m["per_class_f1"][s] for s in ("W", "N1", "N2")] == pytest.approx([0.8, 0.5, 5 / 6])
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 5 / 6) / 3)
    # kappa = (p_o - p_e) / (1 - p_e), p_o = 11/15, p_e = (5*5 + 4*4 + 6*6) / 15^2 = 77/225 -> 88/148
    assert m["kappa"] == pytest.approx(22 / 37)
    assert [row[:3] for row in m["confusion"][:3]] == confusion


def test_metrics_on_a_hand_computed_case():
    # W: 2 true, 1 right; N1: 2 true, both right; nothing else present
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert m["accuracy"] == 0.75
    assert m["per_class_f1"]["W"] == pytest.approx(2 / 3)  # precision 1, recall 1/2
    assert m["per_class_f1"]["N1"] == pytest.approx(0.8)  # precision 2/3, recall 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # absent stages are not averaged as zeros
    assert m["per_class_f1"]["N3"] is None
    assert m["kappa"] == pytest.approx(0.5)  # p_o = 0.75, p_e = 0.5*0.25 + 0.5*0.75 = 0.5
    assert m["confusion"][0][:2] == [1, 1] and m["confusion"][1][:2] == [0, 2]
    assert m["confusion_normalised"][0][:2] == [0.5, 0.5]
    assert m["confusion_normalised"][2] == [0.0] * 5  # a stage with no true epochs: a row of zeros


@pytest.mark.filterwarnings("ignore:.*only one label:UserWarning")  # fold 1 is all W: its kappa is undefined
def test_pooled_over_folds_differs_from_mean_of_folds():
    small_perfect = (np.zeros(10, int), np.zeros(10, int))  # fold 1: 10 epochs, all right
    y = np.arange(90) % 5
    large_half = (y, np.where(np.arange(90) < 45, y, (y + 1) % 5))  # fold 2: 90 epochs, half right
    result = pooled_and_per_fold({1: small_perfect, 2: large_half})
    assert result["pooled"]["accuracy"] == pytest.approx(55 / 100)
    assert result["fold_mean"]["accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert result["fold_std"]["accuracy"] == pytest.approx(0.25)
    assert result["per_fold"][2]["n_epochs"] == 90
    assert result["pooled"]["n_epochs"] == 100


def _fake_metrics(run, paradigm, architecture, classifier, accuracy, macro_f1, kappa, n_folds=10):
    scores = {"accuracy": accuracy, "macro_f1": macro_f1, "kappa": kappa}
    return {"run": run, "exp_name": run, "paradigm": paradigm, "architecture": architecture,
            "classifier": classifier, "label_fraction": 1.0, "dataset": "Sleep-EDF-2018", "num_folds": 10,
            "n_folds": n_folds,
            "n_epochs": 1000, "pooled": scores, "fold_mean": scores, "fold_std": dict.fromkeys(scores, 0.01)}


def test_summarize_builds_the_table_from_metrics_files(tmp_path):
    runs = [_fake_metrics("Baseline_bandpower_Sleep-EDF-2018", "Band power", "—", "logistic regression",
                          0.70, 0.6312, 0.58),
            _fake_metrics("DLPROJ_pretrain_CRL_CNN", "CRL", "CNN", "linear probe", 0.8134, 0.7421, 0.7456),
            {**_fake_metrics("DLPROJ_pretrain_CRL_CNN_run2", "CRL", "CNN", "linear probe", 0.5, 0.5, 0.5, n_folds=2),
             "folds": [1, 3], "probe": "linear"}]
    runs[1]["probe"] = "linear"
    for r in runs:
        (tmp_path / r["run"]).mkdir()
        (tmp_path / r["run"] / "metrics.json").write_text(json.dumps(r))
    md_path, csv_path = write_summary(tmp_path)
    table = [line for line in md_path.read_text().splitlines() if line.startswith("| ")]
    assert table[0].startswith("| Run | Paradigm | Architecture | Classifier | Probe")
    assert table[1] == "| DLPROJ_pretrain_CRL_CNN | CRL | CNN | linear probe | linear | 100% | 10 | 81.3 | 0.742 | 0.746 |"
    assert table[3] == ("| Baseline_bandpower_Sleep-EDF-2018 | Band power | — | logistic regression | — | 100% | 10 | "
                        "70.0 | 0.631 | 0.580 |")
    assert table[2] == ("| DLPROJ_pretrain_CRL_CNN_run2 | CRL | CNN | linear probe | linear | 100% | 1, 3 of 10 | "
                        "50.0 | 0.500 | 0.500 |")
    caption = md_path.read_text().splitlines()[0]
    assert "2-10 (see Folds) fold(s)" in caption and "linear probe" in caption
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["run"] for r in rows] == ["DLPROJ_pretrain_CRL_CNN", "DLPROJ_pretrain_CRL_CNN_run2",
                                        "Baseline_bandpower_Sleep-EDF-2018"]
    assert rows[1]["folds"] == "1 3" and rows[1]["probe"] == "linear"
    assert float(rows[0]["macro_f1_pooled"]) == pytest.approx(0.7421)
    assert float(rows[1]["accuracy_fold_std"]) == pytest.approx(0.01)


def test_summarize_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        write_summary(tmp_path)
