"""Commands as README.md and the operations files show them, for tests that run or check them."""

from __future__ import annotations

import re
import shlex

from tests.conftest import ROOT

README = ROOT / "README.md"
UNIT = ROOT / "systemd" / "trailguard.service"
DOCKERFILE = ROOT / "Dockerfile"


def readme_section(heading: str) -> str:
    """The text under ``### heading`` (or ``## heading``) up to the next heading of any level."""
    text = README.read_text()
    match = re.search(rf"^#{{2,3}} {re.escape(heading)}\n(.*?)(?=^#{{1,3}} )", text, re.M | re.S)
    assert match is not None, f"README.md has no section {heading!r}"
    return match.group(1)


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, re.M | re.S)


def commands(block: str) -> list[str]:
    """The shell commands of a block: continuations joined, comments and blank lines dropped,
    whitespace normalised."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        command = line.split(" #", 1)[0].strip()
        if command and not command.startswith("#"):
            out.append(" ".join(command.split()))
    return out


def readme_install_steps() -> list[str]:
    """README's systemd install commands (the first block of "### systemd")."""
    return commands(code_blocks(readme_section("systemd"))[0])


def unit_header_install_steps() -> list[str]:
    """The install commands in the unit's header comment (the indented lines after "Install")."""
    lines = UNIT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Install"))
    steps: list[str] = []
    for line in lines[start + 1 :]:
        if not line.startswith("#   "):
            if steps:
                break
            continue
        steps.append(line.removeprefix("#"))
    return commands("\n".join(steps))


# docker run options that take a value (those the documented commands use).
_VALUED = {"-p", "-v", "-e", "--stop-timeout", "--name", "--network", "--user"}


def docker_run_options(command: str) -> dict[str, str | None]:
    """The options of a ``docker run`` command line other than -p, -v and -e: name -> value
    (None for a flag)."""
    words = shlex.split(command)
    assert words[:2] == ["docker", "run"], command
    options: dict[str, str | None] = {}
    i = 2
    while i < len(words) and words[i].startswith("-"):
        name, value = words[i], None
        if name in _VALUED:
            value = words[i + 1]
            i += 1
        if name not in {"-p", "-v", "-e"}:
            options[name] = value
        i += 1
    return options


def readme_docker_run() -> str:
    (run,) = [c for c in commands(code_blocks(readme_section("Container"))[0]) if "docker run" in c]
    return run


def dockerfile_docker_run() -> str:
    """The ``docker run`` command of the Dockerfile's header comment."""
    header = []
    for line in DOCKERFILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.removeprefix("#"))
    (run,) = [c for c in commands("\n".join(header)) if c.startswith("docker run")]
    return run
