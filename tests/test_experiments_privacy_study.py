"""The privacy study: defense names, config checks, and a tiny end-to-end run with resumption."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fitscope.data import load
from fitscope.errors import ConfigError
from fitscope.experiments.privacy_defenses import Defense, parse_defense, train_defended
from fitscope.experiments.privacy_study import (
    arrays_to_frame, frame_to_arrays, make_config, plan_units, privacy_study, settings_of,
)


@pytest.mark.parametrize("text, kind, param", [
    ("none", "none", None), ("label-dp:1", "label-dp", 1.0), ("dp-sgd:0.5", "dp-sgd", 0.5),
    ("instahide:4", "instahide", 4.0), ("pruning:0.9", "pruning", 0.9), ("mid:0.01", "mid", 0.01),
])
def test_parse_defense_reads_every_kind(text, kind, param):
    d = parse_defense(text)
    assert (d.kind, d.param) == (kind, param)
    assert parse_defense(d.name) == d


@pytest.mark.parametrize("text, needle", [
    ("dp-sgd:0", "eps > 0"), ("label-dp:-1", "eps > 0"), ("instahide:2.5", "integer k"),
    ("pruning:1.5", "fraction"), ("magic:1", "unknown kind"), ("dp-sgd:x", "a number"), ("", "KIND:VALUE"),
])
def test_parse_defense_rejects_bad_names(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_defense(text)


def test_claimed_eps_only_for_dp_mechanisms():
    assert parse_defense("dp-sgd:2").claimed_eps == 2.0
    assert parse_defense("label-dp:1").claimed_eps == 1.0
    assert math.isinf(parse_defense("instahide:2").claimed_eps)
    assert math.isinf(Defense("none").claimed_eps)


def test_a_run_stored_with_the_old_field_name_still_loads():
    """Runs written before ``shadow_models`` became ``models`` (one word for a count of models) resume."""
    from fitscope.experiments.privacy_study import PrivacyStudyConfig

    old = PrivacyStudyConfig.model_validate({"shadow_models": 6})
    assert old.models == 6 and "shadow_models" not in old.model_dump()
    assert PrivacyStudyConfig.model_validate(old.model_dump()) == old


def test_config_needs_enough_shadow_models_for_lira():
    with pytest.raises(ConfigError, match="LiRA needs at least 5 models"):
        make_config(models=4)
    with pytest.raises(ConfigError, match="each defense once"):
        make_config(defenses=["none", "none"])


@pytest.mark.parametrize("defense", ["none", "label-dp:1", "instahide:2", "pruning:0.5", "mid:0.01"])
def test_train_defended_reports_every_epoch(defense):
    # the ensemble defenses (none, label DP) used to report nothing until the end: a bar sat at 0 for minutes
    data = load("iris")
    cfg = make_config(data="iris", model="mlp:8x1", epochs=3)
    masks = np.ones((2, len(data.y_train)), bool)
    masks[0, ::2] = False
    seen = []
    trained = train_defended(parse_defense(defense), data.x_train, data.y_train, masks,
                             settings_of(cfg, data), data.x_test, data.y_test, seeds=[1, 2], progress=seen.append)
    assert trained.logits.shape == (2, len(data.y_train), 3)
    assert seen == sorted(seen) and seen[-1] == 2 * 3  # model-epochs, monotone, all of them at the end
    assert len(set(seen)) >= 3 and min(seen) < 2 * 3  # several steps, not one jump from 0 to done


def test_units_split_the_defenses_and_the_attacks_and_count_model_epochs():
    cfg = make_config(data="digits", defenses=["none", "dp-sgd:1"], canaries=5,
                      attacks=["instahide", "pruning-vs-noise", "mid-inversion"])
    data = load("digits")
    planned = plan_units(cfg, data)
    keys = [key for key, _, _ in planned]
    assert keys[:4] == ["defense-none", "canary-none", "defense-dp-sgd-1", "canary-dp-sgd-1"]
    assert [k for k in keys if k.startswith("attack-instahide")] == [
        f"attack-instahide-k{k}-{m}" for k in (2, 4, 6) for m in ("nomask", "mask")]
    assert "attack-pruning-vs-noise" in keys
    assert len([k for k in keys if k.startswith("attack-mid-inversion")]) == 5
    work = {key: w for key, _, w in planned}
    assert work["defense-none"] == cfg.models * cfg.epochs and work["canary-dp-sgd-1"] == cfg.dp_epochs
    assert work["attack-pruning-vs-noise"] == (1 + cfg.models) * cfg.epochs
    # tabular data: no InstaHide attack units
    assert not [k for k, _, _ in plan_units(make_config(data="iris"), load("iris")) if "attack-instahide" in k]


def test_one_instahide_setting_gives_its_row_of_the_whole_attack():
    # splitting the attack into units per (k, mask) changes no number
    from fitscope.privacy.instahide_attack import instahide_study

    data = load("digits")
    common = dict(public=data.x_test, seed=3, n_private=12, encodings_per_image=2, rounds=1, steps=20,
                  input_range=(0.0, 1.0))
    whole = instahide_study(data.x_train, data.y_train, ks=(2, 4), masks=(False,), **common)
    one = instahide_study(data.x_train, data.y_train, ks=(4,), masks=(False,), **common)
    pd.testing.assert_frame_equal(one, whole.iloc[[1]].reset_index(drop=True))


def test_attack_tables_round_trip_through_unit_arrays():
    table = pd.DataFrame({"k": [2, 4], "sign_mask": [False, True], "mean_ssim": [0.25, 0.5], "name": ["a", "b"]})
    pd.testing.assert_frame_equal(arrays_to_frame(frame_to_arrays(table)), table)


def test_bad_data_fails_before_the_run_directory_exists(tmp_path):
    with pytest.raises(ConfigError, match="at least 3 classes"):
        privacy_study(make_config(data="breast_cancer", canaries=5), tmp_path / "ps")
    with pytest.raises(ConfigError, match="at most the"):
        privacy_study(make_config(data="iris", canaries=100000), tmp_path / "ps")
    # digits has 1437 rows: halves of 718, so 4 other models hold an example 1.999 times on average, not 2
    with pytest.raises(ConfigError, match="--models: with 5 models on 1437 rows"):
        privacy_study(make_config(data="digits", models=5), tmp_path / "ps")
    assert not (tmp_path / "ps").exists()


@pytest.mark.slow
def test_tiny_study_writes_a_row_per_defense_and_resumes(tmp_path):
    cfg = make_config(data="iris", model="mlp:32x1", defenses=["none", "label-dp:1", "instahide:2", "mid:0.01"],
                      models=6, epochs=5, attacks=["instahide", "pruning-vs-noise", "mid-inversion"],
                      canaries=20)
    run, outcome = privacy_study(cfg, tmp_path / "ps", threads=1)
    results = pd.read_parquet(run.path / "results.parquet")
    assert list(results.defense) == ["none", "label-dp:1", "instahide:2", "mid:0.01"]
    for col in ("test_acc", "lira_auc", "lira_tpr_at_1pct", "loss_auc", "eps_lower_bound"):
        assert results[col].notna().all(), col
    assert ((results.lira_auc >= 0) & (results.lira_auc <= 1)).all()
    # label DP at eps = 1 never gets a canary bound above its claim (a 95% guarantee; seeded, so fixed here)
    row = results.set_index("defense").loc["label-dp:1"]
    assert row.eps_lower_bound <= row.claimed_eps
    html = (run.path / "report.html").read_text()
    assert html.count("<img") >= 3
    # iris is tabular: the InstaHide reconstruction attack is skipped and the report says so
    assert set(outcome.attacks) == {"pruning-vs-noise", "mid-inversion"}
    assert "they need image data" in html and "MID against model inversion" in html
    # no statistic of the private labels (keep rate, training accuracy) in the results, and the report says so
    assert not {"keep_rate", "train_acc"} & set(results.columns)
    assert "Statistics of the private labels are not shown" in html
    assert len(outcome.attacks["mid-inversion"]) == 5 and (run.path / "attack_pruning_vs_noise.parquet").exists()
    assert list(outcome.attacks["mid-inversion"].beta) == [0.0, 0.003, 0.01, 0.1, 1.0]
    # 4 defenses x (shadows, canary model) + pruning-vs-noise + 5 MID betas
    assert len(outcome.trained_units) == 14 and outcome.reused_units == []
    # measured seconds stay out of the tables (the same bits on any executor), in seconds.json
    assert "seconds" not in results
    assert set(json.loads((run.path / "seconds.json").read_text())) == set(outcome.trained_units)

    again_run, again = privacy_study(cfg, tmp_path / "ps", resume=True, threads=1)
    assert again.trained_units == [] and len(again.reused_units) == 14
    assert "Resumed run: 14 finished" in (again_run.path / "report.html").read_text()
    pd.testing.assert_frame_equal(again.results, outcome.results)
    assert np.isfinite(again.results.test_acc).all()


@pytest.mark.slow
def test_dp_sgd_and_the_mid_attack_give_the_local_tables_on_ray(ray_session, tmp_path):
    # the CASES entry of tests/test_study_runner_all.py covers no defense, label DP, pruning and its attack
    from study_harness import check_ray_matches_local

    check_ray_matches_local("privacy-study", dict(data="iris", model="mlp:8x1", defenses=["dp-sgd:4", "mid:0.01"],
                                                  models=5, epochs=2, dp_epochs=1, canaries=0,
                                                  attacks=["mid-inversion"]), tmp_path)


def test_private_stats_note_only_for_dp_defenses():
    from fitscope.report.privacy import private_stats_note

    assert private_stats_note(["none", "instahide:2", "pruning:0.9"]) is None
    for defenses in (["none", "label-dp:1"], ["dp-sgd:4"]):
        assert private_stats_note(defenses).startswith("Statistics of the private labels are not shown")
