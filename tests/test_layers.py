"""The import contract of DESIGN.md, checked on the source: each layer imports only itself and the layers below.

Layers, lowest first::

    runs < data < models < train < {estimators, kernels, dynamics, explain, robustness} < privacy < report < experiments < cli

``estimators``, ``kernels``, ``dynamics``, ``explain`` (saliency maps and their sanity checks) and
``robustness`` (adversarial attacks, defenses, backdoors) are peers: none imports another. ``privacy`` sits
above ``estimators``: a defense is measured with the estimators' attacks (membership
inference) and shares their input checks, so DESIGN.md's "peers" for the three was
too strict for privacy (the code has always imported them). The
top-level modules ``fitscope/errors.py``, ``fitscope/seeding.py``,
``fitscope/validation.py`` (the shared argument checks), ``fitscope/__init__.py``
and ``fitscope/__main__.py`` are the base: any module may import them; ``errors``,
``seeding`` and ``validation`` import only each other (``validation`` only
``errors``), while the package ``__init__`` and ``__main__`` (the entry points) may
import anything, the CLI included.

Studies never import each other: a module of ``fitscope/experiments`` imports no
study module (a module named in :data:`fitscope.experiments.STUDIES`) other than
itself; the runner modules (``study.py``, ``config_errors.py``) and the registry
(``fitscope/experiments/__init__.py``) are shared.

Every ``import``/``from ... import`` of a ``fitscope`` module counts, wherever it is
(inside a function, under ``if TYPE_CHECKING``), absolute or relative. The checker
is a pure function of source texts, so a planted violation can be tested without
touching the package.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import fitscope
from fitscope.experiments import STUDIES

PACKAGE = "fitscope"
ROOT = Path(fitscope.__file__).resolve().parent

#: subpackage -> layer rank (higher may import lower; equal ranks of different packages are peers)
LAYERS: dict[str, int] = {
    "runs": 0,
    "data": 1,
    "models": 2,
    "train": 3,
    "estimators": 4,
    "kernels": 4,
    "dynamics": 4,
    "explain": 4,
    "robustness": 4,
    "privacy": 5,
    "report": 6,
    "experiments": 7,
    "cli": 8,
}
#: top-level modules that any module may import
BASE = {"errors", "seeding", "validation", "__init__", "__main__"}
#: base modules that may import anything (the entry points)
ENTRY = {"__init__", "__main__"}
#: modules of fitscope/experiments every study may import
SHARED_EXPERIMENT_MODULES = {"fitscope.experiments", "fitscope.experiments.study",
                             "fitscope.experiments.config_errors"}


@dataclass(frozen=True)
class Violation:
    """One import that breaks the contract: where it is, what it imports, and which rule it breaks."""

    path: str
    line: int
    importer: str
    target: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.target}: {self.rule}"


def module_name(path: Path, root: Path) -> str:
    """The dotted module name of ``path`` inside the package at ``root`` (``__init__.py`` names the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def is_package(path: Path) -> bool:
    """Whether ``path`` is a package's ``__init__.py`` (relative imports resolve inside it, not beside it)."""
    return path.name == "__init__.py"


def imported_modules(tree: ast.AST, module: str, *, package: bool, known: set[str]) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every fitscope module the syntax tree imports, at any depth.

    ``from fitscope import data`` imports ``fitscope.data`` when that is a module in
    ``known`` (else the package ``fitscope`` itself); relative imports are resolved
    against ``module`` (``package``: ``module`` is a package's ``__init__``).
    """
    found: list[tuple[int, str]] = []
    here = module.split(".") if package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names
                      if alias.name == PACKAGE or alias.name.startswith(PACKAGE + ".")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if source != PACKAGE and not source.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                child = f"{source}.{alias.name}"
                found.append((node.lineno, child if child in known else source))
    return sorted(set(found))  # one entry per (line, module): ``from m import a, b`` is one import of m


def _place(name: str) -> tuple[str, str | None]:
    """``("base", top-level module)`` or ``("layer", subpackage)`` or ``("unknown", first part)`` of a dotted name."""
    parts = name.split(".")
    if len(parts) == 1:
        return "base", "__init__"
    head = parts[1]
    if head in LAYERS:
        return "layer", head
    if len(parts) == 2 and head in BASE:
        return "base", head
    return "unknown", head


def check_import(importer: str, target: str, studies: set[str]) -> str | None:
    """The rule ``importer`` breaks by importing ``target`` (dotted names), or None when the import is allowed."""
    kind_from, where_from = _place(importer)
    kind_to, where_to = _place(target)
    if kind_from == "unknown":
        return f"fitscope/{where_from} is in no layer; add it to LAYERS in tests/test_layers.py (and DESIGN.md)"
    if kind_to == "unknown":
        return f"fitscope/{where_to} is in no layer; add it to LAYERS in tests/test_layers.py (and DESIGN.md)"
    if kind_to == "base":
        return None  # anyone may import the base
    if kind_from == "base":
        if where_from in ENTRY:
            return None
        return f"the base module fitscope/{where_from}.py may import only the base, not the {where_to} layer"
    if where_from == where_to:
        if where_from == "experiments" and target in studies and target != importer:
            return ("studies never import each other: move the shared piece to the layer it belongs to "
                    "(or into fitscope/experiments/study.py if it is the runner's)")
        return None
    rank_from, rank_to = LAYERS[where_from], LAYERS[where_to]
    if rank_to < rank_from:
        return None
    if rank_to == rank_from:
        return f"{where_from} and {where_to} are peers and may not import each other"
    return f"{where_from} (layer {rank_from}) may not import the higher layer {where_to} (layer {rank_to})"


def check_sources(sources: dict[str, tuple[str, str, bool]], studies: set[str]) -> list[Violation]:
    """Every violation in ``sources``: module name -> ``(path shown, source text, is a package __init__)``."""
    known = set(sources)
    out: list[Violation] = []
    for module, (path, text, package) in sorted(sources.items()):
        tree = ast.parse(text, filename=path)
        for line, target in imported_modules(tree, module, package=package, known=known):
            rule = check_import(module, target, studies)
            if rule is not None:
                out.append(Violation(path, line, module, target, rule))
    return out


def package_sources(root: Path = ROOT) -> dict[str, tuple[str, str, bool]]:
    """Every module of the package at ``root``, as :func:`check_sources` takes them."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        shown = str(path.relative_to(root.parent))
        out[module_name(path, root)] = (shown, path.read_text(encoding="utf-8"), is_package(path))
    return out


def study_modules() -> set[str]:
    """The study modules: the values of :data:`fitscope.experiments.STUDIES`."""
    return set(STUDIES.values())


def report(violations: list[Violation]) -> str:
    """The violations as a readable list, one per line."""
    return f"{len(violations)} import(s) break the layer contract of DESIGN.md:\n" + "\n".join(
        f"  {v}" for v in violations)


# --------------------------------------------------------------------------- the package


def test_the_package_keeps_its_layers():
    sources = package_sources()
    assert len(sources) > 50, "the walk found too few modules"  # the walk itself works
    violations = check_sources(sources, study_modules())
    assert not violations, report(violations)


def test_every_subpackage_is_in_a_layer():
    subpackages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert subpackages <= set(LAYERS), f"subpackages in no layer: {sorted(subpackages - set(LAYERS))}"
    tops = {p.stem for p in ROOT.glob("*.py")}
    assert tops <= BASE, f"top-level modules that are not the base: {sorted(tops - BASE)}"


def test_every_study_module_exists():
    missing = [m for m in study_modules() if not (ROOT.parent / (m.replace(".", "/") + ".py")).is_file()]
    assert not missing, f"STUDIES names modules that do not exist: {missing}"


# --------------------------------------------------------------------------- the checker itself


def _src(module: str, text: str, *, package: bool = False) -> tuple[str, tuple[str, str, bool]]:
    path = module.replace(".", "/") + ("/__init__.py" if package else ".py")
    return module, (path, text, package)


def _planted(*modules) -> list[Violation]:
    sources = dict(modules)
    return check_sources(sources, {"fitscope.experiments.audit", "fitscope.experiments.leak"})


def test_checker_catches_an_upward_import_inside_a_function():
    text = "import numpy\n\ndef f():\n    from fitscope.report import write_report\n    return write_report\n"
    found = _planted(_src("fitscope.train.ensemble", text), _src("fitscope.report", "", package=True))
    assert [(v.line, v.importer, v.target) for v in found] == [(4, "fitscope.train.ensemble", "fitscope.report")]
    assert "may not import the higher layer report" in str(found[0])
    assert "fitscope/train/ensemble.py:4" in report(found)


def test_checker_catches_peers_and_studies_and_resolves_relative_imports():
    found = _planted(
        _src("fitscope.privacy.canary", "from ..estimators import membership\n"),  # allowed: privacy > estimators
        _src("fitscope.kernels.api", "from fitscope.privacy import canary\n"),  # not allowed: privacy is higher
        _src("fitscope.estimators.membership", "import fitscope.kernels.api as k\n"),
        _src("fitscope.experiments.leak", "from fitscope.experiments.audit import plan_units\n"
                                          "from fitscope.experiments.study import Study\n"
                                          "from . import config_errors\n"),
        _src("fitscope.experiments.audit", "from .leak import x\n"),
        _src("fitscope.experiments.config_errors", ""),
    )
    got = {(v.importer, v.target) for v in found}
    assert got == {
        ("fitscope.kernels.api", "fitscope.privacy.canary"),
        ("fitscope.estimators.membership", "fitscope.kernels.api"),
        ("fitscope.experiments.leak", "fitscope.experiments.audit"),
        ("fitscope.experiments.audit", "fitscope.experiments.leak"),
    }
    assert all("peers" in v.rule for v in found if v.importer.startswith("fitscope.estim"))
    assert all("studies never import each other" in v.rule for v in found if "experiments" in v.importer)


def test_checker_allows_what_the_contract_allows():
    found = _planted(
        _src("fitscope.cli.audit", "from fitscope.experiments import get_study\nfrom fitscope.report import x\n"),
        _src("fitscope.experiments.audit", "from fitscope.experiments.study import Study\n"
                                           "from fitscope import errors\nimport fitscope\n"
                                           "from fitscope.seeding import derive_seed\n"),
        _src("fitscope.data.load", "from fitscope.runs import atomic\nfrom fitscope.errors import DataError\n"),
        _src("fitscope.__main__", "from fitscope.cli import main\n"),
        _src("fitscope", "from fitscope.cli import app\n", package=True),
        _src("fitscope.report.html", "from fitscope.runs.atomic import atomic_write_text\n"),
    )
    assert found == []


def test_the_validation_module_is_base_and_imports_only_errors():
    text = (ROOT / "validation.py").read_text(encoding="utf-8")
    found = imported_modules(ast.parse(text), "fitscope.validation", package=False, known=set(package_sources()))
    assert {target for _, target in found} == {"fitscope.errors"}
    assert check_import("fitscope.runs.executors", "fitscope.validation", set()) is None  # the lowest layer may use it
    rule = check_import("fitscope.validation", "fitscope.data.validation", set())
    assert rule is not None and "base module fitscope/validation.py may import only the base" in rule


def test_checker_catches_the_base_importing_a_layer_and_unknown_packages():
    found = _planted(
        _src("fitscope.errors", "from fitscope.runs import Run\n"),
        _src("fitscope.data.load", "from fitscope.nowhere import hessian\n"),
    )
    rules = {v.importer: v.rule for v in found}
    assert len(found) == 2
    assert "base module fitscope/errors.py may import only the base" in rules["fitscope.errors"]
    assert "fitscope/nowhere is in no layer" in rules["fitscope.data.load"]


def test_dynamics_is_a_peer_of_estimators_and_kernels():
    found = _planted(
        _src("fitscope.dynamics.hessian", "from fitscope.train.device import placement_device\n"
                                         "from fitscope.models import build_plain\n"),  # allowed: lower layers
        _src("fitscope.dynamics.other", "from fitscope.kernels import ntk\n"),
        _src("fitscope.estimators.membership", "from fitscope.dynamics import hessian\n"),
        _src("fitscope.dynamics.report_use", "from fitscope.report import figures\n"),
        _src("fitscope.experiments.leak", "from fitscope.dynamics import hessian_trace\n"),  # allowed: higher
    )
    got = {(v.importer, v.target): v.rule for v in found}
    assert set(got) == {("fitscope.dynamics.other", "fitscope.kernels"),
                        ("fitscope.estimators.membership", "fitscope.dynamics.hessian"),
                        ("fitscope.dynamics.report_use", "fitscope.report")}
    assert "peers" in got[("fitscope.dynamics.other", "fitscope.kernels")]
    assert "may not import the higher layer report" in got[("fitscope.dynamics.report_use", "fitscope.report")]
