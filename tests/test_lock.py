"""The lock files agree with pyproject.toml, the tests run on what they pin, and the code imports
only what pyproject.toml declares.

pyproject.toml keeps the ranges; requirements.lock (the project) and requirements-test.lock (with
its test extra) pin one version of every package, with hashes, and are written by .ci/lock. A
dependency added to pyproject.toml without running .ci/lock, or imported without being declared,
fails here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
APP = [Requirement(r) for r in PYPROJECT["dependencies"]]
TEST = [Requirement(r) for r in PYPROJECT["optional-dependencies"]["test"]]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(?: \\)?$")


def pins(name: str) -> dict[str, str]:
    """requirements*.lock -> {canonical name: pinned version}, each pin checked to carry hashes."""
    found: dict[str, str] = {}
    lines = (REPO / name).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        match = _PIN.match(line)
        if match:
            following = lines[number + 1] if number + 1 < len(lines) else ""
            assert following.strip().startswith("--hash=sha256:"), f"{name}:{number + 1}: {line} has no hash"
            found[canonicalize_name(match[1])] = match[2]
    return found


@pytest.mark.parametrize(("lock", "declared"), [
    ("requirements.lock", APP),
    ("requirements-test.lock", APP + TEST),
])
def test_each_declared_dependency_is_pinned_inside_its_range(lock, declared):
    pinned = pins(lock)
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement} is in pyproject.toml but not in {lock}: run .ci/lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside pyproject.toml's {requirement}: run .ci/lock")


def test_the_app_lock_is_the_test_lock_less_the_test_tools():
    app, test = pins("requirements.lock"), pins("requirements-test.lock")
    assert {name: test.get(name) for name in app} == app
    assert set(app) < set(test)


def test_the_tests_run_on_the_versions_the_lock_pins():
    """.ci/install installs requirements-test.lock: every pinned package is there, at its version."""
    wrong = {}
    for name, version in pins("requirements-test.lock").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"(pinned, installed) differ, run .ci/install: {wrong}"


def test_the_readme_and_ci_install_from_the_locks():
    """Command 1 and .ci/install take every package from a lock, hash-checked, and the project
    itself without resolving anything again (the README's first ```sh block, before `# 2.`)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command_1 = readme.split("```sh", 1)[1].split("# 2.", 1)[0]
    install = (REPO / ".ci" / "install").read_text(encoding="utf-8")
    for text, lock in ((command_1, "requirements.lock"), (install, "requirements-test.lock")):
        assert re.search(rf"pip.* install (-q )?--require-hashes -r {re.escape(lock)}\b", text), lock
        assert re.search(r"pip.* install (-q )?--no-deps -e \.", text), lock


# --- what the code imports ----------------------------------------------------------------------

def _local_names() -> set[str]:
    """Every module or package name the repository itself could be imported as."""
    files = [p for p in REPO.rglob("*.py") if ".venv" not in p.parts]
    return {p.stem for p in files} | {p.parent.name for p in files}


def _fallbacks(tree: ast.AST) -> set[int]:
    """ids of import nodes inside an `except ImportError:` handler: the older library's spelling,
    brought by an older version of a declared dependency (mailer/cli.py: click for typer < 0.20)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Name) and node.type.id == "ImportError":
            inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def third_party_imports(*folders: str) -> dict[str, str]:
    """{top-level module name: a file importing it} for every import that is neither the
    standard library nor the repository's own."""
    local, found = _local_names(), {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            skip = _fallbacks(tree)
            for node in ast.walk(tree):
                if id(node) in skip:
                    continue
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in local and top != "__future__":
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


@pytest.mark.parametrize(("folders", "declared", "where"), [
    (("mailer", "subscribers"), APP, "[project] dependencies"),
    (("tests", "bench"), APP + TEST, "[project] dependencies or the test extra"),
])
def test_every_imported_library_is_declared(folders, declared, where):
    providers = importlib.metadata.packages_distributions()
    names = {canonicalize_name(r.name) for r in declared}
    undeclared = {
        module: f"{path} (from {', '.join(providers.get(module, ['an unknown distribution']))})"
        for module, path in third_party_imports(*folders).items()
        if not names & {canonicalize_name(d) for d in providers.get(module, [])}
    }
    assert not undeclared, f"imported but not in pyproject.toml's {where}: {undeclared}"
