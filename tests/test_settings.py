"""Settings in sections: each package declares the section it reads beside its code, a process gathers its
sections, and the public names (`SWITCHBOARD_<FIELD>`) stay what the README and compose.yaml say."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import typing
from functools import cache
from pathlib import Path

import msgspec
import pytest

from backend.settings import BackendSettings
from dashboard.settings import DashboardSettings
from switchboard.settings import sections_of
from tests.support.settings import backend_settings

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("switchboard", "backend", "dashboard", "connectors", "tools")
# one variable two processes read: the backend's default wait target for sites, the board's where a site
# has none
SHARED_BY_PROCESSES = {"wait_target_s": {"SitesSection", "DashboardSection"}}
# compose's own variables (the database roles' passwords it builds URLs from), read by no process
NOT_SETTINGS = {"SWITCHBOARD_APP_PASSWORD", "SWITCHBOARD_OWNER_PASSWORD"}


def _module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@cache
def declared_sections() -> dict[str, type[msgspec.Struct]]:
    """Every `…Section` Struct our packages declare, by its module and name (`backend.auth.AuthSection`)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, ast.ClassDef) and node.name.endswith("Section") \
                        and any(ast.unparse(base) == "msgspec.Struct" for base in node.bases):
                    module = _module_of(path)
                    found[f"{module}.{node.name}"] = getattr(importlib.import_module(module), node.name)
    return found


def _owner(module: str) -> str:
    """What a section belongs to: a package of a process (`backend.ingest`), or a module at its top
    (`backend.auth`); the kernel's are everybody's."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] != "switchboard" else "switchboard"


def test_the_scan_finds_the_sections_of_every_process():
    owners = {_owner(name.rsplit(".", 1)[0]) for name in declared_sections()}
    assert {"switchboard", "backend.ingest", "backend.auth", "dashboard.settings",
            "connectors.webhook"} <= owners


def test_every_variable_is_read_by_one_section():
    readers: dict[str, set[str]] = {}
    for name, section in declared_sections().items():
        for field in msgspec.structs.fields(section):
            readers.setdefault(field.name, set()).add(name.rsplit(".", 1)[1])
    shared = {field: names for field, names in readers.items() if len(names) > 1}
    assert shared == SHARED_BY_PROCESSES


def test_each_process_gathers_every_section_of_its_own():
    """No section of the backend or the dashboard is read on its own: the app gets them all at start."""
    for process, settings in (("backend", BackendSettings), ("dashboard", DashboardSettings)):
        own = {section for name, section in declared_sections().items() if name.startswith(f"{process}.")}
        assert own == set(sections_of(settings).values()) - {
            s for n, s in declared_sections().items() if n.startswith("switchboard.")}, process


def test_a_section_is_imported_only_by_its_own_package_and_the_settings_that_gather_it():
    """A domain reads its own section (from `resources.settings`); another domain's fields are not its
    to read."""
    sections = {name.rsplit(".", 1)[1]: name.rsplit(".", 1)[0] for name in declared_sections()}
    gatherers = {"backend.settings", "dashboard.settings"}
    offending = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            importer = _module_of(path)
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.ImportFrom) and node.module):
                    continue
                for alias in node.names:
                    home = sections.get(alias.name)
                    if home is None or _owner(home) == "switchboard" or package == "tools":
                        continue
                    if _owner(importer) != _owner(home) and importer not in gatherers:
                        offending.append(f"{importer}:{node.lineno} imports {alias.name} of {home}")
    assert offending == []


def _sample(annotation: object, name: str) -> tuple[str, object]:
    """An environment value for a field of this type, and what the section should hold for it."""
    if annotation is bool:
        return "true", True
    if annotation is int:
        return "7", 7
    if annotation is float:
        return "2.5", 2.5
    if typing.get_origin(annotation) is tuple:
        return f"{name}-a, {name}-b", [f"{name}-a", f"{name}-b"]
    return f"{name}-value", f"{name}-value"


def test_every_field_of_the_backend_is_read_from_its_public_name():
    env: dict[str, str] = {}
    expected: dict[str, dict[str, object]] = {}
    for attribute, section in sections_of(BackendSettings).items():
        hints = typing.get_type_hints(section)
        for field in msgspec.structs.fields(section):
            raw, value = _sample(hints[field.name], field.name)
            env[f"SWITCHBOARD_{field.name.upper()}"] = raw
            expected.setdefault(attribute, {})[field.name] = value
    code = ("import msgspec, sys; from backend.settings import BackendSettings as S;"
            " sys.stdout.write(msgspec.json.encode(S.from_env()).decode())")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    # every variable set: a `.env` (never overriding the environment) changes nothing
    read = subprocess.run([sys.executable, "-c", code], env={**clean, **env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, cwd=ROOT, timeout=30, check=True)
    assert json.loads(read.stdout) == expected


def test_every_variable_the_readme_and_compose_name_is_read_by_a_section():
    text = (ROOT / "README.md").read_text() + (ROOT / "compose.yaml").read_text()
    named = set(re.findall(r"SWITCHBOARD_[A-Z0-9_]*[A-Z0-9]", text)) - NOT_SETTINGS
    read = {f"SWITCHBOARD_{field.name.upper()}" for section in declared_sections().values()
            for field in msgspec.structs.fields(section)}
    assert named, "the scan found no names"
    assert named - read == set()


def test_tests_set_a_field_in_the_section_declaring_it_and_no_field_nothing_reads():
    settings = backend_settings(rules_file="rules.toml", jwt_secret="fake-secret", retention_audit_days=91)
    assert (settings.routing.rules_file, settings.tokens.jwt_secret) == ("rules.toml", "fake-secret")
    assert settings.retention.retention_audit_days == 91
    assert settings.ingest == BackendSettings().ingest  # the rest: the defaults
    with pytest.raises(TypeError, match="declares rules_fiel"):
        backend_settings(rules_fiel="rules.toml")
