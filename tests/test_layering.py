"""The layers, enforced: cli → (tui, personalize) → core → convert.

- ``tunechat.core`` imports nothing above it (no cli, tui or personalize);
- ``tunechat.convert`` is a leaf: it imports nothing else of tunechat;
- ``tunechat.personalize`` never draws (no textual, no tui);
- ``tunechat.tui`` never trains: of personalize it uses only the modules that talk to the
  worker process, and no layer of the chat process imports torch, transformers or peft;
- the install puts nothing at the top of site-packages but ``tunechat``.

Imports are read from the source (every ``import``, also inside functions), and the chat
process is also started for real and its ``sys.modules`` read.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Package name → folder, as pyproject.toml's package-dir maps them.
PACKAGES = {
    "tunechat.cli": ROOT / "tunechat" / "cli",
    "tunechat.core": ROOT / "tunechat" / "core",
    "tunechat.tui": ROOT / "tui",
    "tunechat.personalize": ROOT / "personalize",
    "tunechat.convert": ROOT / "convert",
}
HEAVY = ("torch", "transformers", "peft")
# The modules of personalize that the chat may use: they start and read the worker process.
PROCESS_CLIENT = {"tunechat.personalize", "tunechat.personalize.job", "tunechat.personalize.progress",
                  "tunechat.personalize.report", "tunechat.personalize.recipe"}
MAPPED_FOLDERS = ("tui", "personalize", "convert")


def imported_modules(source: str, module: str) -> set[str]:
    """Every module ``source`` (the code of ``module``) imports, relative imports resolved."""
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(module: str, imports: set[str]) -> list[str]:
    """What ``module`` may not import, of ``imports``."""
    bad = [f"{module} imports {name}: install-time name is tunechat.{name}"
           for name in imports if name.split(".")[0] in MAPPED_FOLDERS]
    forbidden: list[str] = []
    if _under(module, "tunechat.core"):
        forbidden = ["tunechat.cli", "tunechat.tui", "tunechat.personalize", "textual", *HEAVY]
    elif _under(module, "tunechat.convert"):
        forbidden = ["tunechat.cli", "tunechat.tui", "tunechat.personalize", "tunechat.core", "textual"]
    elif _under(module, "tunechat.personalize"):
        forbidden = ["tunechat.cli", "tunechat.tui", "textual"]
    elif _under(module, "tunechat.tui"):
        forbidden = ["tunechat.cli", *HEAVY]
        bad += [f"{module} imports {name}: the chat uses only personalize's process client"
                for name in imports if _under(name, "tunechat.personalize") and name not in PROCESS_CLIENT
                and name.rsplit(".", 1)[0] not in PROCESS_CLIENT - {"tunechat.personalize"}]
    bad += [f"{module} imports {name}" for name in imports for f in forbidden if _under(name, f)]
    return sorted(set(bad))


def project_modules() -> list[tuple[str, Path]]:
    out = []
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out.append((".".join((package, *parts)), path))
    return out


def test_the_checker_catches_a_bad_import():
    """The rules below mean something: each kind of break is seen."""
    assert violations("tunechat.core.store", imported_modules("from tunechat.tui.app import TunechatApp",
                                                                "tunechat.core.store"))
    assert violations("tunechat.core.engine", imported_modules("def f():\n    import torch\n", "tunechat.core.engine"))
    assert violations("tunechat.convert.writer",
                      imported_modules("from ..core import paths", "tunechat.convert.writer"))
    assert violations("tunechat.personalize.train", imported_modules("import textual", "tunechat.personalize.train"))
    assert violations("tunechat.tui.app",
                      imported_modules("from tunechat.personalize import train", "tunechat.tui.app"))
    assert violations("tunechat.cli", imported_modules("import convert.writer", "tunechat.cli"))
    assert not violations("tunechat.tui.app", imported_modules("from tunechat.personalize.job import PersonalizeJob",
                                                               "tunechat.tui.app"))


@pytest.mark.parametrize("module, path", project_modules(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_module_imports_only_what_its_layer_allows(module, path):
    assert violations(module, imported_modules(path.read_text(encoding="utf-8"), module)) == []


def test_tests_and_benchmarks_import_the_installed_names():
    for path in [*sorted((ROOT / "tests").glob("*.py")), *sorted((ROOT / "bench").glob("*.py"))]:
        imports = imported_modules(path.read_text(encoding="utf-8"), f"tests.{path.stem}")
        assert not [n for n in imports if n.split(".")[0] in MAPPED_FOLDERS], path.name


CHAT_PROCESS = textwrap.dedent("""
    import asyncio, importlib, pkgutil, sys
    import tunechat.cli, tunechat.tui
    for info in pkgutil.walk_packages(tunechat.tui.__path__, "tunechat.tui."):
        importlib.import_module(info.name)
    from tunechat.core.store import Store
    from tunechat.tui.app import TunechatApp

    async def main():
        app = TunechatApp(Store())
        async with app.run_test() as pilot:
            for key in ("f3", "escape", "f7", "escape", "f1", "escape"):
                await pilot.press(key)
                await pilot.pause()
    asyncio.run(main())
    print("HEAVY=" + ",".join(m for m in ("torch", "transformers", "peft") if m in sys.modules))
""")


@pytest.mark.timeout(120)
def test_the_chat_process_never_imports_torch(tmp_path):
    env = dict(os.environ, TUNECHAT_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-c", CHAT_PROCESS], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY=\n" in proc.stdout, proc.stdout


def test_the_install_exposes_only_tunechat_at_the_top(tmp_path):
    """Run from outside the clone (``-I``: no current folder, no PYTHONPATH): the card's folders
    import as tunechat.tui / tunechat.personalize / tunechat.convert and nowhere else."""
    code = ("import importlib.util as u; print([n for n in ('tui', 'personalize', 'convert') if u.find_spec(n)], "
            "[n for n in ('tunechat.tui', 'tunechat.personalize', 'tunechat.convert') if u.find_spec(n) is None])")
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.stdout.strip() == "[] []", proc.stdout + proc.stderr
