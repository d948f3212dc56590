"""One word per idea: a count of models is ``models``, ``K`` means models (never classes), ``eps`` is the
privacy budget, a seed is passed by keyword, and each CLI flag means one thing.

These scan the code and the CLI, so a second word for an idea cannot come back unnoticed.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
import typer.main

import fitscope
from fitscope.cli import app
from fitscope.experiments import STUDIES, get_study

ROOT = Path(fitscope.__file__).resolve().parent
# K used for a number of classes, in docstrings, comments and messages
K_AS_CLASSES = [r"\bK\s+classes\b", r"n_classes:\s*``?K\b", r"\b0\s*\.\.\s*K\s*-\s*1\b", r"1\s*/\s*K\b",
                r"//\s*K\b", r"%\s*K\b", r"\(n,\s*K\)\s*(class|prob)"]
OTHER_WORDS_FOR_MODELS = {"shadow_models", "n_shadow", "num_models", "n_models"}
# the seed is the subject of these functions (the value they check or derive from), so it comes first
SEED_FIRST = {"fitscope.seeding.derive_seed", "fitscope.seeding.set_seed", "fitscope.validation.check_seed",
              "fitscope.validation.check_seeds", "fitscope.models.layers.init_generators"}


def _sources():
    return sorted(p for p in ROOT.rglob("*") if p.suffix in (".py", ".j2") and "__pycache__" not in p.parts)


def test_k_never_means_classes():
    found = []
    for path in _sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if any(re.search(pattern, line) for pattern in K_AS_CLASSES):
                found.append(f"{path.relative_to(ROOT.parent)}:{number}: {line.strip()}")
    assert not found, "K means a number of models; use C for classes:\n" + "\n".join(found)


def test_k_as_classes_is_caught():
    line = "classes_: ``(K,)`` the sorted labels; about p (1 - 1/K) for K classes"
    assert any(re.search(pattern, line) for pattern in K_AS_CLASSES)


def test_study_configs_count_models_as_models_and_say_eps():
    for kind in STUDIES:
        fields = set(get_study(kind).config.model_fields)
        assert not fields & OTHER_WORDS_FOR_MODELS, (kind, fields & OTHER_WORDS_FOR_MODELS)
        assert "epsilon" not in fields and "target_epsilon" not in fields, kind


def _visible_flags(command) -> set[str]:
    return {opt for param in command.params if not getattr(param, "hidden", False) for opt in param.opts}


def _commands():
    group = typer.main.get_command(app)
    stack = [((), group)]
    while stack:
        path, command = stack.pop()
        subs = getattr(command, "commands", None)
        if subs:
            stack.extend(((*path, name), sub) for name, sub in subs.items())
        else:
            yield " ".join(path), command


def test_cli_flags_use_one_word_per_idea():
    from fitscope.cli import main

    with pytest.raises(SystemExit):  # registers every command, as the fitscope script does
        main(["--help"])
    seen = dict(_commands())
    assert {"audit", "randomization", "privacy-study", "kernels complexity"} <= set(seen)
    for name, command in seen.items():
        flags = _visible_flags(command)
        assert not flags & {"--shadow-models", "--n-models", "--num-models", "--epsilon"}, (name, flags)
        # --noise is audit's exact flipped fraction (noisy-labels flips the same way, with flip_labels);
        # a redraw probability is --corrupt-prob everywhere
        if "--noise" in flags:
            assert name in ("audit", "noisy-labels"), name


def _public_callables():
    for info in pkgutil.walk_packages(fitscope.__path__, "fitscope."):
        if ".cli" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != info.name:
                continue
            if inspect.isfunction(obj):
                yield f"{info.name}.{attr}", obj
            elif inspect.isclass(obj) and not dataclasses.is_dataclass(obj) and not issubclass(obj, tuple):
                # (records such as results and unit tasks hold a seed as data; they draw nothing)
                yield f"{info.name}.{attr}", obj.__init__
                for meth_name, meth in vars(obj).items():
                    if inspect.isfunction(meth) and not meth_name.startswith("_"):
                        yield f"{info.name}.{attr}.{meth_name}", meth


def test_seed_is_keyword_only_in_every_public_function():
    positional = []
    for name, fn in _public_callables():
        if name in SEED_FIRST:
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue
        for pname in ("seed", "seeds"):
            p = params.get(pname)
            if p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY):
                positional.append(f"{name}({pname})")
    assert not positional, "seed must be keyword-only:\n" + "\n".join(sorted(positional))


@pytest.mark.parametrize("name", sorted(SEED_FIRST))
def test_the_exceptions_exist(name):
    module, attr = name.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), attr))
