"""Every third-party import of the package is declared in setup.cfg.

The package's modules are read as source (no import): every ``import`` and ``from ... import``,
at module level or inside a function (the lazy ones), except those under ``if TYPE_CHECKING:``,
is mapped to the distribution that provides it. That distribution must be in ``install_requires``,
or in the extra named for it in ``OPTIONAL`` (then the import must be lazy, so the module imports
without the extra), or be one of the few in ``UNDECLARED``, each used only where that says. A new
import of an undeclared package fails here, even when Airflow happens to bring it along today.
"""

from __future__ import annotations

import ast
import configparser
import sys
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "airflow_provider_qwen"
FIRST_PARTY = "airflow_provider_qwen"

# Optional imports: the distribution -> the extra that installs it (directly or as its dependency).
OPTIONAL = {
    "pyarrow": "parquet",  # Parquet inputs and results of QwenBatchOperator
    "apache-airflow-providers-openlineage": "openlineage",  # the operators' OpenLineage facets
    "openlineage-python": "openlineage",
    "attrs": "openlineage",  # the qwen run facet is an attrs class, as OpenLineage facets are
}
# Imports no requirement declares, each with why, and the only modules that may make them.
UNDECLARED = {
    "pytest": (
        "the pytest plugin is loaded by pytest itself (entry point pytest11)",
        {"airflow_provider_qwen.testing.pytest_plugin"},
    ),
    "flask-appbuilder": (
        "the connection form widgets of Airflow 3.0/3.1 (FAB), guarded by ImportError",
        {"airflow_provider_qwen.hooks.qwen"},
    ),
    "flask-babel": ("as flask-appbuilder", {"airflow_provider_qwen.hooks.qwen"}),
    "wtforms": ("as flask-appbuilder", {"airflow_provider_qwen.hooks.qwen"}),
    "httptools": (
        "uvicorn's faster HTTP parser when installed (uvicorn[standard]), guarded by ImportError",
        {"airflow_provider_qwen.testing.emulator"},
    ),
}
# Distributions that come pinned, version for version, with a declared one.
PINNED_BY = {"pydantic-core": "pydantic"}


@dataclass(frozen=True)
class Import:
    name: str  # the dotted module name imported
    module: str  # the importing module
    line: int
    lazy: bool  # inside a function or a try/except ImportError: the module imports without it
    guarded: bool  # inside a try/except ImportError


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _guards_import_error(node: ast.Try) -> bool:
    names = set()
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names |= {getattr(kind, "id", None) for kind in kinds}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def _imports_of(path: Path) -> list[Import]:
    module = _module_name(path)
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool, guarded: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, lazy, guarded)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, module, node.lineno, lazy, guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(Import(node.module, module, node.lineno, lazy, guarded))
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if isinstance(node, ast.Try) and _guards_import_error(node):
            for child in node.body:
                visit(child, True, True)
            for rest in (*node.handlers, *node.orelse, *node.finalbody):
                visit(rest, inner, guarded)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, inner, guarded)

    visit(ast.parse(path.read_text(), filename=str(path)), False, False)
    return found


@cache
def all_imports() -> tuple[Import, ...]:
    paths = sorted(p for p in PACKAGE.rglob("*.py") if "schemas" not in p.parts)
    return tuple(i for path in paths for i in _imports_of(path))


def third_party() -> list[Import]:
    return [i for i in all_imports() if i.name.split(".")[0] not in sys.stdlib_module_names | {FIRST_PARTY}]


@cache
def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


@cache
def _top_level_providers() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@cache
def distribution_of(name: str) -> str:
    """The (canonical) name of the distribution that provides the module ``name``."""
    parts = name.split(".")
    if parts[0] == "airflow":
        if len(parts) > 2 and parts[1] == "providers":
            # airflow.providers.common.sql -> apache-airflow-providers-common-sql (longest installed)
            for end in range(len(parts), 2, -1):
                candidate = canonicalize_name("apache-airflow-providers-" + "-".join(parts[2:end]))
                if _installed(candidate):
                    return candidate
            raise AssertionError(f"no installed Airflow provider provides {name}")
        return "apache-airflow"  # core and Task SDK: both come with apache-airflow
    for known in UNDECLARED:
        if canonicalize_name(parts[0]) == canonicalize_name(known):
            return canonicalize_name(known)
    providers = _top_level_providers().get(parts[0])
    assert providers, f"no installed distribution provides the module {parts[0]!r} (imported as {name})"
    dists = {canonicalize_name(d) for d in providers}
    if len(dists) > 1:  # a namespace package several distributions share: whose files hold the module
        dists = {d for d in dists if _holds(d, name)}
    (dist,) = dists
    return dist


def _holds(dist: str, module: str) -> bool:
    path = module.replace(".", "/")
    return any(str(f).startswith(path) for f in metadata.distribution(dist).files or ())


@cache
def declared() -> tuple[frozenset[str], dict[str, frozenset[str]]]:
    """``install_requires`` and the extras of setup.cfg, as canonical distribution names."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")

    def names(text: str) -> frozenset[str]:
        lines = [line.split("#")[0].strip() for line in text.splitlines()]
        return frozenset(canonicalize_name(Requirement(line).name) for line in lines if line)

    extras = {extra: names(text) for extra, text in config.items("options.extras_require")}
    return names(config.get("options", "install_requires")), extras


@cache
def _requires_of(dist: str) -> frozenset[str]:
    return frozenset(
        canonicalize_name(Requirement(r).name) for r in metadata.requires(dist) or () if "extra ==" not in r
    )


def test_the_walk_sees_top_level_and_lazy_imports():
    seen = {(i.module, i.name, i.lazy) for i in third_party()}
    assert ("airflow_provider_qwen.testing.app", "starlette.applications", False) in seen
    assert ("airflow_provider_qwen.testing.emulator", "uvicorn", True) in seen
    assert ("airflow_provider_qwen.batch.readers", "pyarrow.parquet", True) in seen
    # storage.py imports ObjectStoragePath at module level only under TYPE_CHECKING
    assert not [i for i in third_party() if i.module == "airflow_provider_qwen.storage" and not i.lazy]


def test_every_third_party_import_is_declared():
    required, extras = declared()
    problems = []
    for item in third_party():
        dist = distribution_of(item.name)
        where = f"{item.module}:{item.line} imports {item.name} ({dist})"
        if dist in required:
            continue
        if dist in PINNED_BY and canonicalize_name(PINNED_BY[dist]) in required:
            continue
        if dist in OPTIONAL:
            extra = OPTIONAL[dist]
            in_extra = extras.get(extra, frozenset())
            if not (dist in in_extra or any(dist in _requires_of(r) for r in in_extra if _installed(r))):
                problems.append(f"{where}: not installed by the extra [{extra}]")
            elif not item.lazy:
                problems.append(f"{where}: optional (extra [{extra}]) but imported at module level")
            continue
        if dist in UNDECLARED:
            if item.module not in UNDECLARED[dist][1]:
                problems.append(f"{where}: only {sorted(UNDECLARED[dist][1])} may import it undeclared")
            continue
        problems.append(f"{where}: not in install_requires (setup.cfg)")
    assert not problems, "undeclared imports:\n" + "\n".join(problems)


def test_every_declared_requirement_is_imported():
    """No requirement is left over from code that is gone (nor typed under a wrong name)."""
    required, extras = declared()
    imported = {distribution_of(i.name) for i in third_party()}
    assert required - imported == set()
    for extra in set(OPTIONAL.values()):
        assert extras[extra], extra


@pytest.mark.parametrize("dist", sorted(UNDECLARED))
def test_undeclared_imports_are_guarded_or_in_their_one_module(dist: str):
    uses = [i for i in third_party() if distribution_of(i.name) == dist]
    assert uses, f"{dist} is no longer imported: drop it from UNDECLARED"
    if dist != "pytest":
        assert all(i.guarded for i in uses), f"{dist} must be imported under try/except ImportError"


def test_the_installed_distribution_declares_what_setup_cfg_does():
    """The metadata the wheel carries is setup.cfg's (the editable install is not stale)."""
    required, _ = declared()
    assert _requires_of("airflow-provider-qwen") == required
