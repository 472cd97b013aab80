"""The claims table's machinery: verdicts in closed form, every claim's arms valid and distinct, one claim
end to end (1 seed, tiny budget), resumed without training again."""

from __future__ import annotations

import itertools
import json

import pytest

from sslzoo import config as config_lib
from sslzoo import settings
from sslzoo.claims import CLAIMS, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Arm, Claim, compare, spread, verdict
from sslzoo.claims.__main__ import main
from sslzoo.config import parse_options
from sslzoo.methods import method_options


def test_spread_is_the_mean_and_the_sample_standard_deviation():
    assert spread([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sum of squares 2 over n - 1 = 2
    mean, std = spread([4.0])
    assert mean == 4.0 and std != std  # nan: one value has no spread


@pytest.mark.parametrize("better, worse, expected", [
    ([50, 51, 52], [40, 41, 42], REPRODUCED),        # 51 - 1 > 41 + 1
    ([40, 41, 42], [50, 51, 52], NOT_REPRODUCED),    # the other way round, apart
    ([50, 51, 52], [48, 49, 50], INCONCLUSIVE),      # 50 > 49 + 1 fails: the intervals touch
    ([50, 52, 54], [49, 50, 51], INCONCLUSIVE),      # means ordered, intervals overlap
    ([60], [40], INCONCLUSIVE),                      # one seed: no spread, no verdict
    ([60, 60], [40, 40], REPRODUCED),                # zero spread, apart
])
def test_a_pair_is_decided_by_its_intervals(better, worse, expected):
    assert compare(better, worse) == expected


def test_a_claim_is_reproduced_only_when_every_pair_is():
    claim = Claim("c", "paper", "a beats b beats c", "x.yaml", (Arm("a"), Arm("b"), Arm("c")),
                  (("a", "b"), ("b", "c")))
    apart = {"a": [60, 61, 62], "b": [50, 51, 52], "c": [40, 41, 42]}
    assert verdict(claim, apart)[0] == REPRODUCED
    assert verdict(claim, {**apart, "c": [50, 51, 53]})[0] == INCONCLUSIVE
    result, pairs = verdict(claim, {**apart, "c": [70, 71, 72]})
    assert result == NOT_REPRODUCED and [p["verdict"] for p in pairs] == [REPRODUCED, NOT_REPRODUCED]


def test_a_claim_must_order_its_own_arms():
    with pytest.raises(ValueError, match="beats must order"):
        Claim("c", "paper", "s", "x.yaml", (Arm("a"), Arm("b")), (("a", "z"),))
    with pytest.raises(ValueError, match="repeat"):
        Claim("c", "paper", "s", "x.yaml", (Arm("a"), Arm("a")), (("a", "a"),))


@pytest.mark.parametrize("name", list(CLAIMS))
def test_every_arm_is_a_valid_config_and_the_arms_differ_only_in_their_setting(name):
    claim = CLAIMS[name]
    resolved = {}
    for arm in claim.arms:
        # An arm changes the method, the batch size or the rate, never the data or the evaluation.
        assert all(o.startswith(("method.options.", "trainer.batch_size=", "optimizer.learning_rate="))
                   for o in arm.overrides), arm
        config = config_lib.load(settings.resolve_config(claim.config), [*claim.budget, *arm.overrides])
        parse_options(method_options(config.method.name), config.method.options, "method.options")
        resolved[arm.name] = config.to_dict()
    for a, b in itertools.combinations(claim.arms, 2):
        assert resolved[a.name] != resolved[b.name], f"{name}: arms {a.name} and {b.name} train the same config"
        assert resolved[a.name]["data"] == resolved[b.name]["data"] and resolved[a.name]["eval"] == resolved[b.name]["eval"]


TINY = ["data.synthetic_examples=120", "encoder.options.width=0.25", "trainer.epochs=1", "trainer.batch_size=32",
        "eval.linear_epochs=1", "eval.knn_k=5"]


def test_one_claim_end_to_end_and_resumed(tmp_path, capsys):
    out = tmp_path / "claims"
    args = ["--only", "simclr_h_vs_z", "--seeds", "1", "--data", "synthetic", "--output", str(out), "--set", *TINY]
    assert main(args) == 0
    results = json.loads((out / "simclr_h_vs_z" / "results.json").read_text())
    assert results["verdict"] == INCONCLUSIVE  # one seed
    assert set(results["arms"]) == {"h", "z"} and results["seeds"] == [0]
    for arm in results["arms"].values():
        assert 0 <= arm["runs"][0]["linear_top1"] <= 100
    assert "| h |" in (out / "simclr_h_vs_z" / "report.md").read_text()
    assert "simclr_h_vs_z" in (out / "claims.md").read_text()
    assert "simclr_h_vs_z: inconclusive" in capsys.readouterr().out
    logs = {path: path.stat().st_mtime_ns for path in out.glob("simclr_h_vs_z/*/seed0.log")}
    assert len(logs) == 2
    assert main(args) == 0  # finished runs are read, not trained again
    assert {path: path.stat().st_mtime_ns for path in logs} == logs
    assert json.loads((out / "simclr_h_vs_z" / "results.json").read_text())["arms"] == results["arms"]


def test_a_failed_arm_stops_with_its_folder_and_log(tmp_path, capsys):
    args = ["--only", "simclr_h_vs_z", "--seeds", "1", "--data", "synthetic", "--output", str(tmp_path),
            "--set", "method.options.no_such_option=1"]
    assert main(args) == 1
    error = capsys.readouterr().err
    assert "training failed" in error and "seed0.log" in error and "no_such_option" in error


def test_bad_arguments_are_refused_before_any_training(tmp_path, capsys):
    assert main(["--only", "nope", "--data", "synthetic", "--output", str(tmp_path)]) == 2
    assert "unknown claim nope" in capsys.readouterr().err
    assert main(["--seeds", "0", "--data", "synthetic", "--output", str(tmp_path)]) == 2
    assert main(["--output", str(tmp_path)]) == 2
    assert "--data is required" in capsys.readouterr().err
    assert main(["--data", f"folder:{tmp_path / 'missing'}", "--output", str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    (tmp_path / "a_file").write_text("")
    assert main(["--data", "synthetic", "--output", str(tmp_path / "a_file")]) == 2
    assert "is a file" in capsys.readouterr().err
