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


def test_configuration_reference_lists_every_setting() -> None:
    """docs/configuration.md names every APPVITALS_* variable in the code and every argument."""
    import inspect

    reference = (ROOT / "docs" / "configuration.md").read_text()
    variables = set()
    for path in (ROOT / "src" / "appvitals").rglob("*.py"):
        variables |= set(re.findall(r'"(APPVITALS_[A-Z_]+)"', path.read_text()))
    missing = sorted(v for v in variables if f"`{v}`" not in reference)
    assert not missing, f"undocumented variables: {missing}"
    arguments = inspect.signature(appvitals.configure).parameters
    undocumented = sorted(a for a in arguments if f"`{a}`" not in reference)
    assert not undocumented, f"undocumented configure() arguments: {undocumented}"


def test_docs_index_is_the_readme() -> None:
    """The docs site's home page is the README (links rewritten into the site)."""
    readme = (ROOT / "README.md").read_text()
    expected = readme.replace("(docs/", "(").replace(
        "[CHANGELOG.md](CHANGELOG.md)", "the changelog (`CHANGELOG.md` in the repository)"
    )
    assert (ROOT / "docs" / "index.md").read_text() == expected
