"""The hash-pinned locks (requirements/*.lock) against pyproject.toml, offline.

pyproject.toml keeps the ranges; the locks pin what scripts/test (the test lock) and the image
(the service lock) install with `pip install --require-hashes`. A lock no longer satisfies
pyproject.toml when a requirement of its dependency groups is missing from it or pinned outside
the requirement's range (a range was edited, a dependency added, without regenerating the lock).
Then this test fails and names the command that regenerates the lock, which the lock's header must
name too. Every pin must be exact (==) and carry at least one sha256 hash. Each check is also shown
a broken copy, so one that accepts anything fails.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

#: The oldest Python the locks are resolved for (universal: every platform, this Python and newer):
#: the image's, python:3.11-slim.
LOCK_PYTHON = "3.11"


@dataclass(frozen=True)
class Lock:
    path: str                # relative to the repository root, as in the command
    extras: tuple[str, ...]  # the optional-dependency groups locked beside `dependencies`
    installed_by: tuple[str, ...]  # the files that install it with --require-hashes

    @property
    def command(self) -> str:
        """What regenerates the lock, run from the repository root (README: "Dependencies and locks")."""
        extras = "".join(f" --extra {extra}" for extra in self.extras)
        return (f"uv pip compile pyproject.toml{extras} --universal --python-version {LOCK_PYTHON} "
                f"--generate-hashes -o {self.path}")


LOCKS = [
    Lock("requirements/service.lock", (), ("deploy/Dockerfile", "scripts/serve-demo")),
    Lock("requirements/test.lock", ("test",), ("scripts/test", "scripts/serve-browser-demo")),
]


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: tuple[str, ...]

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)


def parse_lock(text: str) -> tuple[list[str], list[Pin]]:
    """(the header's comment lines before the first pin, the pins). A pin is one logical line,
    `name==version [; marker] --hash=sha256:... ...`, continued with backslashes."""
    header: list[str] = []
    pins: list[Pin] = []
    logical = re.sub(r"\\\n", " ", text).splitlines()
    for line in logical:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if not pins:
                header.append(stripped.lstrip("#").strip())
            continue
        assert not stripped.startswith("-"), f"an option line in a lock: {stripped!r}"
        spec, _, options = stripped.partition(" --")
        options = "--" + options if options else ""
        hashes = tuple(re.findall(r"--hash[= ](\S+)", options))
        assert re.sub(r"--hash[= ]\S+", "", options).strip() == "", f"unexpected options in {stripped!r}"
        pins.append(Pin(Requirement(spec.strip()), hashes))
    return header, pins


def requirements_of(project: dict[str, Any], extras: tuple[str, ...]) -> list[Requirement]:
    """The project's `dependencies` and those extras' requirements (a self-reference such as
    `forward-auth[otel]` expands to that extra)."""
    own = canonicalize_name(project["name"])
    groups = project.get("optional-dependencies", {})
    found: list[Requirement] = []
    pending, seen = [None, *extras], set()
    while pending:
        group = pending.pop()
        if group in seen:
            continue
        seen.add(group)
        assert group is None or group in groups, f"pyproject.toml has no extra {group!r}"
        for text in project["dependencies"] if group is None else groups[group]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == own:
                pending += sorted(requirement.extras)
            else:
                found.append(requirement)
    return found


def lock_problems(pyproject: dict[str, Any], lock: Lock, text: str) -> list[str]:
    """What is wrong with the lock's text as a lock of those groups of pyproject; [] when all is well."""
    problems = []
    header, pins = parse_lock(text)
    if lock.command not in header:
        problems.append(f"the header must name the command that regenerates it: {lock.command}")
    if not pins:
        problems.append("no pins")
    by_name: dict[str, list[Pin]] = {}
    for pin in pins:
        by_name.setdefault(pin.name, []).append(pin)
        specifiers = list(pin.requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            problems.append(f"{pin.requirement}: not pinned to one version (==)")
        if pin.requirement.url or pin.requirement.extras:
            problems.append(f"{pin.requirement}: a lock pins plain names (no URL, no extras)")
        if not pin.hashes:
            problems.append(f"{pin.requirement}: no --hash")
        for digest in pin.hashes:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                problems.append(f"{pin.requirement}: not a sha256 hash: {digest}")
    for requirement in requirements_of(pyproject["project"], lock.extras):
        locked = by_name.get(canonicalize_name(requirement.name), [])
        if not locked:
            problems.append(f"{requirement}: not in the lock")
        for pin in locked:
            version = Version(next(iter(pin.requirement.specifier)).version)
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{requirement}: the lock pins {version}")
    return problems


def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


def regenerate_hint(lock: Lock) -> str:
    return f"{lock.path} no longer matches pyproject.toml: regenerate it from the repository root with\n    {lock.command}"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda lock: lock.path)
def test_the_lock_satisfies_pyproject_and_pins_every_file_by_hash(lock: Lock) -> None:
    problems = lock_problems(pyproject(), lock, (ROOT / lock.path).read_text())
    assert not problems, regenerate_hint(lock) + "\n" + "\n".join(problems)


@pytest.mark.parametrize("lock", LOCKS, ids=lambda lock: lock.path)
def test_the_lock_is_what_gets_installed_with_hashes(lock: Lock) -> None:
    for installer in lock.installed_by:
        text = (ROOT / installer).read_text()
        assert f"--require-hashes -r {lock.path}" in text, installer
        # The project itself on top, resolving nothing anew.
        assert re.search(r"pip install [^\n]*--no-deps ", text), installer


def test_the_locks_are_resolved_for_the_image_python() -> None:
    match = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)-", DOCKERFILE.read_text(), re.M)
    assert match and match.group(1) == LOCK_PYTHON, f"deploy/Dockerfile's Python is not {LOCK_PYTHON}"
    requires = pyproject()["project"]["requires-python"]
    assert Requirement(f"python{requires}").specifier.contains(LOCK_PYTHON), requires


def test_the_service_lock_holds_no_test_tool() -> None:
    _, pins = parse_lock((ROOT / LOCKS[0].path).read_text())
    assert not {"pytest", "ruff", "playwright", "supertokens-python"} & {pin.name for pin in pins}


# --- each check, shown a broken copy ----------------------------------------------------------------

def _tightened(data: dict[str, Any], name: str, spec: str) -> dict[str, Any]:
    """pyproject with the requirement `name` (in dependencies and every extra) replaced by name+spec."""
    project = dict(data["project"])

    def swap(group: list[str]) -> list[str]:
        return [f"{name}{spec}" if canonicalize_name(Requirement(r).name) == name else r for r in group]
    project["dependencies"] = swap(project["dependencies"])
    project["optional-dependencies"] = {k: swap(v) for k, v in project["optional-dependencies"].items()}
    return {**data, "project": project}


def _locked_version(text: str, name: str) -> Version:
    _, pins = parse_lock(text)
    return Version(next(iter(next(p for p in pins if p.name == name).requirement.specifier)).version)


@pytest.mark.parametrize("lock", LOCKS, ids=lambda lock: lock.path)
def test_the_lock_check_rejects_a_stale_lock(lock: Lock) -> None:
    text = (ROOT / lock.path).read_text()
    data = pyproject()
    baseline = set(lock_problems(data, lock, text))  # [] unless the lock is stale (the test above says so)
    falcon = _locked_version(text, "falcon")
    broken_pyprojects = {
        "range excludes the pin": _tightened(data, "falcon", f">{falcon}"),
        "exact pin elsewhere": _tightened(data, "falcon", f"=={falcon.major}.{falcon.minor}.{falcon.micro + 1}"),
        "new dependency": {**data, "project": {**data["project"],
                                                "dependencies": [*data["project"]["dependencies"], "left-pad>=1"]}},
    }
    if lock.extras:
        broken_pyprojects["new extra requirement"] = {**data, "project": {**data["project"], "optional-dependencies": {
            **data["project"]["optional-dependencies"],
            lock.extras[0]: [*data["project"]["optional-dependencies"][lock.extras[0]], "left-pad>=1"]}}}
    for why, broken in broken_pyprojects.items():
        assert set(lock_problems(broken, lock, text)) - baseline, why
    broken_texts = {
        "pin dropped": re.sub(r"(?m)^falcon==.*(\n    .*)*\n", "", text),
        "unhashed pin": re.sub(r"(?m)^(falcon==\S+)( \\\n    --hash=\S+)+", r"\1", text),
        "range pin": re.sub(r"(?m)^falcon==", "falcon>=", text),
        "other command": text.replace(f"-o {lock.path}", "-o elsewhere.txt", 1),
        "no hashes option": text.replace("--generate-hashes ", "", 1),
    }
    for why, broken in broken_texts.items():
        assert broken != text, why
        assert set(lock_problems(data, lock, broken)) - baseline, why
