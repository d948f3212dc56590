"""Every study on the one study runner: Ray gives the local tables; a killed run resumes training only the rest.

Each case is a tiny setting of the study with at least two units, fast enough for CI.
"""

from __future__ import annotations

import pytest

from fitscope.experiments import STUDIES
from study_harness import check_kill_and_resume, check_ray_matches_local, local_run

# study name -> config values of a tiny run with >= 2 units (each porter owns its own entry)
CASES: dict[str, dict] = {
    "audit": dict(model="mlp:16x1", models=8, ratio=0.5, cscore_ratios=[0.5], epochs=2, noise=0.1, chunk=4,
                  oof_families=["logistic"]),
    "privacy-study": dict(data="iris", model="mlp:8x1", defenses=["none", "label-dp:1", "pruning:0.5"],
                          models=5, epochs=2, canaries=10, attacks=["pruning-vs-noise"]),
    "train": dict(data="iris", model="mlp:8x1", mechanism="label-dp", eps=2.0, stages=2, epochs=3, models=2,
                  canaries=10),
    "federated": dict(clients=6, fraction=0.5, rounds=2, algorithms=["fedavg", "fedsgd"], partitions=["noniid"],
                      model="mlp:16x1", local_epochs=1, engine="in-process"),
    "kernels-uci": dict(datasets=["iris", "wine"], depths=[1], max_fixed=0, svm_C=[1.0], gamma_factors=[1.0],
                        rf_trees=5, rf_max_features=["sqrt"], folds=2),
    "kernels-small-data": dict(sizes=[10], seeds=[0], kernels=["cntk-gap"], depth=1, models=["cnn:8"], steps=5),
    "kernels-complexity": dict(max_examples=40, noise_levels=[0.0, 1.0], seeds=[0], model="mlp:16x1", epochs=3),
    "randomization": dict(model="mlp:16x1", seeds=[0], epochs=2, parts=["curves", "noise"],
                          corruptions=["random_labels", "shuffled_pixels"], noise_levels=[0.0, 1.0]),
    "leak": dict(model="mlp:16x1", models=8, epochs=2, chunk=4),
    "seed-agreement": dict(model="mlp:16x1", models=4, chunk=2, epochs=2),
    "dynamics-sharpness": dict(data="mnist1d", rows=60, model="mlp:8x1", gd_lrs=[0.1, 0.5], gd_steps=6, every=3,
                               sgd_lrs=[0.5], batch_sizes=[16], sgd_time=2.0, sgd_measurements=2, probes=3),
    "dynamics-exp-lr": dict(rows=100, nets=["mlp:8x1"], precisions=["float64", "float32"], steps=8, every=4,
                            batch_size=16),
    "dynamics-layers": dict(nets=["mlp:8x1", "resnet:2x1"], models=1, epochs=1, checkpoints=[0, 1]),
    "dynamics-connectivity": dict(data="digits", model="mlp:8x1", epochs=1, curve_epochs=1, points=3, draws=1),
    "dynamics-identity": dict(size=0, depths=[1, 2], architectures=["fc", "cnn"], width=8, channels=2,
                              test_inputs=4, noise_inputs=2, max_steps=5, show=1),
    "dynamics-matrix-factorization": dict(size=8, rank=1, observed=[30, 50], depths=[1, 2], max_steps=300,
                                          solver_eps=1e-4),
    "noisy-labels": dict(data="digits", train_rows=200, model="mlp:16x1", methods=["ce", "clean"], noise=[0.4],
                         noise_mode=["uniform"], seeds=[0, 1], epochs=2, tune=False),
    "saliency": dict(data=["digits"], model="cnn:4-8", rows=3, epochs=1, random_label_epochs=1, ig_steps=4,
                     smoothgrad_samples=2),
    "robust": dict(specs=["mlp:8x1"], norms=["inf"], epochs=1, eps_curve=[0.1], train_steps=1, attack_steps=1,
                   restarts=1, mlp_widths=[], cnn_widths=[], l0_attacks=[]),
    "backdoor": dict(model="mlp:8x1", seeds=[0], fractions=[0.1], epochs=1, support=20, nc_steps=5, si_steps=5,
                     si_noise_samples=2, si_all_classes=False),
}


def test_every_study_has_a_case():
    assert sorted(CASES) == sorted(STUDIES)


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """Each study's case run once from scratch on the local executor (threads 1), made when first asked for: the
    reference of both its Ray run and its killed-and-resumed run."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = local_run(name, CASES[name], tmp_path_factory.mktemp(name) / "local")
        return made[name]

    return get


# first: each study's local run is made while its killed run starts in a subprocess
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_kill_and_resume(name, local_runs, tmp_path):
    check_kill_and_resume(name, CASES[name], tmp_path, reference=lambda: local_runs(name).run.path)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_ray_matches_local(name, ray_session, local_runs, tmp_path):
    check_ray_matches_local(name, CASES[name], tmp_path, local=local_runs(name))
