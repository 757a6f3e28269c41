"""Every documented example runs: python blocks in README/docs, and docstring examples."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import appvitals
from appvitals.testing import reset

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# ```python blocks run; ```py blocks are fragments that need a server or a fixture.
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for index, match in enumerate(BLOCK.finditer(path.read_text())):
            found.append((f"{path.name}#{index}", match.group(1)))
    return found


@pytest.mark.parametrize(("where", "code"), _blocks(), ids=[w for w, _ in _blocks()])
def test_documented_example_runs(
    where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A python block from the docs runs without error (in a scratch folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("APPVITALS_EXPORTER", "none")
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})
    reset()


def _modules() -> list[str]:
    names = ["appvitals"]
    for info in pkgutil.walk_packages(appvitals.__path__, "appvitals."):
        names.append(info.name)
    return names


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples(
    module_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Docstring examples (>>>) of every module pass."""
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, module_name):
        runner.run(test)
        reset()
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed in {module_name}"
