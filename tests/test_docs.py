"""The documentation is checked like code: its examples run, its outputs are real.

Conventions in docs/*.md (an HTML comment on the line right before a fenced block; GitHub
does not render it):

- every ```` ```python ```` block of a page in ``RUN_PAGES`` is executed, in order, in one
  namespace per page (like a notebook);
- ``<!-- docs: skip REASON -->``: the block is not executed (it needs CUDA, a dataset...);
- ``<!-- docs: raises NAME -->``: the block must raise ``NAME`` (an optimhub exception or a
  builtin one); its output is ``NAME: message``;
- ``<!-- docs: output -->`` before a ```` ```text ```` block: it must equal what the python
  block just before it printed (or raised), line for line;
- ``<!-- docs: file PATH -->``: the block is the whole file PATH (repository-relative);
- ``<!-- docs: excerpt PATH -->``: the block occurs verbatim in the file PATH.

Besides: every relative link resolves (file and heading anchor), every ``test_*`` name the
docs cite exists in tests/, the generated pages are current, and the training-loop
example trains.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.util
import io
import itertools
import re
import runpy
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import torch

import optimhub

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: Pages whose python blocks are executed.
RUN_PAGES = (
    "quickstart.md",
    "user-guide.md",
    "training-loops.md",
    "migrating-from-hf-trainer.md",
    "writing-plugins.md",
    "namespaces.md",
)

#: What each page's examples import or build (``make test`` installs all of it): a page is
#: skipped, with the reason, where one is missing.
REQUIRES = {
    "namespaces.md": ("pytorch_optimizer", "heavyball"),
    "quickstart.md": ("apollo_torch", "schedulefree"),
    "user-guide.md": ("apollo_torch", "galore_torch", "schedulefree", "lomo_optim",
                      "bitsandbytes", "torchao"),
    "training-loops.md": ("lomo_optim", "schedulefree", "bitsandbytes"),
    "migrating-from-hf-trainer.md": ("transformers", "accelerate", "galore_torch",
                                     "schedulefree", "lomo_optim"),
    "writing-plugins.md": ("optimhub_example_plugin",),
}

#: Pages other engineers are writing at the same time: a link to one of them may point to
#: a file that does not exist yet. Once it exists, its links and anchors are checked too.
PENDING_PAGES: frozenset[str] = frozenset()

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*docs:\s*(\w+)\s*(.*?)\s*-->\s*$")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """The examples train tiny models: one thread is many times faster than two on a busy
    2-core machine (and the outputs the pages show do not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Block:
    """One fenced code block, with the directive written right before it (if any)."""

    page: str
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    directive: str = ""
    argument: str = ""

    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    """The fenced blocks of a docs page, in order."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    result: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        start = index
        index += 1
        body = []
        while index < len(lines) and lines[index].rstrip() != "```":
            body.append(lines[index])
            index += 1
        directive = _DIRECTIVE.match(lines[start - 1]) if start else None
        result.append(Block(
            page=page, line=start + 1, language=opening.group(1), text="\n".join(body) + "\n",
            directive=directive.group(1) if directive else "",
            argument=directive.group(2) if directive else "",
        ))
        index += 1
    return result


def _exception_class(name: str) -> type[BaseException]:
    found = getattr(optimhub, name, None) or getattr(builtins, name, None)
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise AssertionError(f"docs: raises {name}: no such exception")
    return found


def run_page(page: str) -> list[tuple[Block, str]]:
    """Execute the page's python blocks; returns each executed block with its output."""
    namespace: dict[str, object] = {"__name__": "__docs__"}
    results = []
    for block in blocks(page):
        if block.language != "python" or block.directive in ("skip", "excerpt", "file"):
            continue
        out = io.StringIO()
        code = compile(block.text, block.where(), "exec")
        expected = _exception_class(block.argument) if block.directive == "raises" else None
        try:
            with contextlib.redirect_stdout(out):
                exec(code, namespace)
        except Exception as exc:
            if expected is None or not isinstance(exc, expected):
                detail = "".join(traceback.format_exception(exc))
                raise AssertionError(f"{block.where()} raised:\n{detail}") from exc
            out.write(f"{block.argument}: {exc}\n")
        else:
            if expected is not None:
                raise AssertionError(f"{block.where()} should raise {block.argument}")
        results.append((block, out.getvalue()))
    return results


def _normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


# ---------------------------------------------------------------------------- the pages
@pytest.mark.parametrize("page", RUN_PAGES)
def test_python_blocks_run_and_show_their_real_output(page: str) -> None:
    missing = [m for m in REQUIRES.get(page, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"docs/{page} needs {', '.join(missing)} (make test installs them)")
    results = run_page(page)
    outputs = {block.line: output for block, output in results}
    for previous, block in itertools.pairwise(blocks(page)):
        if block.directive != "output":
            continue
        assert previous.language == "python" and previous.line in outputs, (
            f"{block.where()}: an output block must follow an executed python block"
        )
        assert _normalized(block.text) == _normalized(outputs[previous.line]), (
            f"{block.where()} does not show what {previous.where()} prints now; it prints:\n"
            f"{outputs[previous.line]}"
        )
    assert results, f"docs/{page} has no executed python block"


def _all_blocks() -> list[Block]:
    return [b for page in sorted(p.name for p in DOCS.glob("*.md")) for b in blocks(page)]


@pytest.mark.parametrize(
    "block", [b for b in _all_blocks() if b.directive in ("file", "excerpt")],
    ids=lambda b: f"{b.page}:{b.line}",
)
def test_quoted_code_is_the_real_code(block: Block) -> None:
    source = (ROOT / block.argument).read_text(encoding="utf-8")
    if block.directive == "file":
        assert block.text == source, f"{block.where()} is not the current {block.argument}"
    else:
        assert block.text.strip("\n") in source, (
            f"{block.where()} is not (or no longer) an excerpt of {block.argument}"
        )


# ---------------------------------------------------------------------------- links
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]{2,}|`", "", heading.strip()).lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            slug = _slug(line.lstrip("#"))
            candidate, count = slug, 0
            while candidate in anchors:
                count += 1
                candidate = f"{slug}-{count}"
            anchors.add(candidate)
    return anchors


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md")),
            ROOT / "examples" / "optimhub-example-plugin" / "README.md"]


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        relative = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else ""
        if not resolved.exists():
            if relative not in PENDING_PAGES:
                broken.append(f"{target} (no such file)")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target} (no heading with that anchor)")
    assert broken == [], f"{path.relative_to(ROOT)}: broken links: {broken}"


def test_every_cited_test_exists() -> None:
    """The docs cite tests as evidence; a renamed or deleted test must not leave a dead
    citation behind."""
    defined = set()
    for source in (ROOT / "tests").glob("*.py"):
        defined |= set(re.findall(r"def (test_\w+)", source.read_text(encoding="utf-8")))
        defined.add(source.stem)
    cited = {name: page.name for page in DOCS.glob("*.md")
             for name in re.findall(r"\btest_\w+\b(?!\*)", page.read_text(encoding="utf-8"))}
    missing = {name: page for name, page in cited.items() if name not in defined}
    assert missing == {}


def test_the_index_and_the_readme_list_every_page() -> None:
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert {p for p in pages if f"]({p})" not in index} == set()
    assert {p for p in pages if f"](docs/{p})" not in readme} == set()


def test_quickstart_lists_every_extra() -> None:
    """A new extra in pyproject.toml must be documented where users choose what to install."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = set(project["project"]["optional-dependencies"])
    quickstart = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    assert {e for e in extras if f"| `{e}` |" not in quickstart} == set()


# ---------------------------------------------------------------------------- generated
def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("optimhub_docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_docs_are_current() -> None:
    stale = [p.name for p in _generator().stale_pages()]
    assert stale == [], f"{stale} are stale: run .venv/bin/python docs/generate.py"


def test_generated_pages_list_every_built_in_name_and_no_plugin_name() -> None:
    from optimhub.catalog import load_catalog

    page = (DOCS / "optimizers.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^### `(\w+)`$", page, flags=re.MULTILINE))
    assert documented == set(load_catalog())
    capabilities = (DOCS / "capabilities.md").read_text(encoding="utf-8")
    assert set(re.findall(r"^## `(\w+)`$", capabilities, flags=re.MULTILINE)) == {
        c.value for c in optimhub.Capability
    }


# ---------------------------------------------------------------------------- the example
def test_training_loops_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """examples/training_loops.py trains every kind of optimizer with one loop: each run's
    training loss and evaluation loss go down."""
    missing = [m for m in ("lomo_optim", "schedulefree") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"examples/training_loops.py needs {', '.join(missing)}")
    path = ROOT / "examples" / "training_loops.py"
    runpy.run_path(str(path), run_name="__main__")
    lines = capsys.readouterr().out.strip().splitlines()
    rows = {}
    for line in lines[1:]:
        name, numbers = re.split(r"\s{2,}", line, maxsplit=1)
        values = [float(x) for x in numbers.split()]
        rows[name] = values
    assert set(rows) == {"adamw_torch", "schedule_free_adamw", "lomo",
                         "adamw_torch layerwise", "sgd plateau"}
    for name, (first, last, *evals, _lr) in rows.items():
        assert last < 0.6 * first, f"{name}: training loss {first} -> {last}"
        assert len(evals) == 3 and evals[-1] < evals[0], f"{name}: eval losses {evals}"


def test_docs_harness_detects_a_wrong_output(tmp_path: Path, monkeypatch) -> None:
    """The checker itself: a stale output block and a block that fails are caught."""
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nimport optimhub\nprint(1 + 1)\n```\n\n<!-- docs: output -->\n```text\n3\n```\n"
        "\n<!-- docs: raises OptimArgsError -->\n```python\n"
        "optimhub.create_optimizer('sgd', [], lr=-1)\n```\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "DOCS", tmp_path)
    results = run_page("page.md")
    assert results[0][1] == "2\n"
    assert results[1][1].startswith("OptimArgsError: learning_rate must be in (0, inf)")
    with pytest.raises(AssertionError, match="does not show what"):
        test_python_blocks_run_and_show_their_real_output("page.md")
