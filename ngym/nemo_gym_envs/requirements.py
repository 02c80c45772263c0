"""An environment's `requirements.txt`, read as pip would: which line installs nemo-gym itself (replaced by our
compatibility package), which come from the package registry, and which point outside it (git URLs, release
downloads, local paths), which ngym refuses with one clear error. An environment with no `requirements.txt`
but a `pyproject.toml` (as NeMo Gym allows) has its `[project] dependencies` read the same way, a dependency that
`[tool.uv.sources]` takes from git, a URL or a path counting as outside the registry."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

NEMO_GYM_NAME = re.compile(r"^nemo[-_.]?gym\b", re.IGNORECASE)
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")
_URL = re.compile(r"(^|[\s@])(git\+|hg\+|svn\+|bzr\+|https?://|file:)", re.IGNORECASE)


class RequirementsError(ValueError):
    """A requirement ngym cannot install from the package registry; the message names it."""


@dataclass(frozen=True)
class Requirement:
    line: str  # as written, comments and surrounding spaces removed
    name: str | None  # the distribution name, when the line names one
    from_registry: bool


@dataclass(frozen=True)
class Requirements:
    path: Path
    nemo_gym_lines: tuple[str, ...] = ()
    installable: tuple[Requirement, ...] = ()
    outside_registry: tuple[Requirement, ...] = field(default_factory=tuple)

    @property
    def registry_lines(self) -> list[str]:
        return [req.line for req in self.installable]

    def check_registry_only(self, environment: str) -> None:
        """Raise RequirementsError naming the environment and the first requirement from outside the registry."""
        if self.outside_registry:
            bad = self.outside_registry[0]
            what = f"{bad.name} ({bad.line})" if bad.name else bad.line
            raise RequirementsError(
                f"environment {environment}: requirement {what} in {self.path} is not on the package registry "
                "(a git URL, a download or a local path); ngym installs environments' requirements from the "
                "registry only"
            )


def parse_requirements(path: Path) -> Requirements:
    """The lines of a requirements file (absent: the sibling pyproject.toml's dependencies, else none), classified."""
    nemo: list[str] = []
    installable: list[Requirement] = []
    outside: list[Requirement] = []
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    lines = text.splitlines()
    pyproject = path.with_name("pyproject.toml")
    if not path.is_file() and pyproject.is_file():
        path, lines = pyproject, _pyproject_lines(pyproject)
    for raw in lines:
        line = _strip_comment(raw).strip()
        if not line:
            continue
        editable = line.startswith(("-e ", "--editable "))
        body = line.split(None, 1)[1].strip() if editable else line
        if body.startswith("-"):  # options such as --extra-index-url, -r other.txt, -c constraints.txt
            outside.append(Requirement(line, None, from_registry=False))
            continue
        name_match = _NAME.match(body)
        name = name_match.group(1) if name_match else None
        if name is not None and _URL.search(body) and "@" not in body.split("://")[0]:
            name = None  # a bare URL: its scheme is not a name
        if name is not None and NEMO_GYM_NAME.match(name):
            nemo.append(line)
            continue
        local = body.startswith((".", "/", "~"))
        if editable or local or _URL.search(body):
            outside.append(Requirement(line, name, from_registry=False))
        else:
            installable.append(Requirement(line, name, from_registry=True))
    return Requirements(path, tuple(nemo), tuple(installable), tuple(outside))


def _pyproject_lines(path: Path) -> list[str]:
    """`[project] dependencies`, each written as a requirements line (`name @ source` when uv takes it elsewhere)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    sources = data.get("tool", {}).get("uv", {}).get("sources", {})
    lines = []
    for dependency in data.get("project", {}).get("dependencies", []):
        found = _NAME.match(dependency.strip())
        source = sources.get(found.group(1)) if found else None
        where = next((source[k] for k in ("git", "url", "path") if isinstance(source, dict) and k in source), None)
        lines.append(f"{found.group(1)} @ {where}" if found and where else dependency)
    return lines


def _strip_comment(line: str) -> str:
    """pip's rule: `#` starts a comment at the line's start or after whitespace (not inside a URL fragment)."""
    return re.sub(r"(^|\s)#.*$", "", line)
