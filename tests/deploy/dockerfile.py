"""A small Dockerfile reader: the instructions of each stage, continuation lines joined."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile"


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # the rest of the instruction, continuation lines joined

    def exec_form(self) -> list[str]:
        """ENTRYPOINT/CMD in JSON (exec) form."""
        words = json.loads(self.value)
        assert isinstance(words, list), f"{self.keyword} must use the JSON form"
        return [str(word) for word in words]

    def words(self) -> list[str]:
        return shlex.split(self.value)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def env(self, stage: Stage) -> dict[str, str]:
        """The stage's ENV settings, in order (KEY=VALUE form)."""
        env: dict[str, str] = {}
        for instruction in stage.all("ENV"):
            for word in instruction.words():
                key, sep, value = word.partition("=")
                assert sep, f"ENV {instruction.value!r}: use the KEY=VALUE form"
                env[key] = value
        return env


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(path: Path = DOCKERFILE) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            words = value.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, not {keyword}"
            key, _, default = value.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, value))
    return Dockerfile(global_args, stages)
