"""The Dockerfile parsed without Docker: stages, COPY sources against .dockerignore (Docker's
matching rules), and the serve image's entry point, ports, user and health check."""

from __future__ import annotations

import glob
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from qgnn_deploy.contract import (
    GRPC_PORT,
    HEALTH_COMMAND,
    METRICS_PORT,
    MODELS_DIR,
    RUN_AS_UID,
    SERVE_COMMAND,
)


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword (upper case), its ``--flags`` and its arguments."""

    keyword: str
    flags: dict[str, str]
    args: str
    line: int

    def words(self) -> list[str]:
        """Exec form (a JSON array) or the whitespace-separated shell form."""
        text = self.args.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
        return shlex.split(text)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile (line continuations joined, comments dropped)."""
    instructions = []
    pending, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        flags = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            key, _, value = flag[2:].partition("=")
            flags[key] = value
            rest = rest.strip()
        instructions.append(Instruction(keyword.upper(), flags, rest, start))
    return instructions


def dockerfile_stages(instructions: list[Instruction]) -> dict[str, list[Instruction]]:
    """Stage name (or index) -> its instructions, FROM first."""
    stages: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    for ins in instructions:
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else str(len(stages))
            current = stages.setdefault(name, [])
        if current is not None:
            current.append(ins)
    return stages


class DockerIgnore:
    """The build context's ``.dockerignore``, with Docker's semantics: patterns are paths from the
    context root (``*``, ``?``, ``**``), the last matching pattern wins, ``!`` re-includes, and a
    path is excluded when it or a parent directory matches."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in patterns:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            line = str(PurePosixPath(line.lstrip("!").strip())).lstrip("/")
            self.rules.append((negate, re.compile(self._regex(line))))

    @classmethod
    def from_file(cls, path: Path) -> DockerIgnore:
        return cls(path.read_text().splitlines() if path.is_file() else [])

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = [], 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("**/", i):
                out.append("(?:.*/)?")
                i += 3
                continue
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            if c == "*":
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            elif c == "[":
                end = pattern.index("]", i + 1)
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]")
                i = end
            elif c == "\\" and i + 1 < len(pattern):
                i += 1
                out.append(re.escape(pattern[i]))
            else:
                out.append(re.escape(c))
            i += 1
        return "^" + "".join(out) + "$"

    def excluded(self, rel_path: str) -> bool:
        """Whether the context-relative POSIX path ``rel_path`` is left out of the context."""
        parts = PurePosixPath(rel_path).parts
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        result = False
        for negate, regex in self.rules:
            if negate:
                if regex.match(rel_path):
                    result = False
            elif any(regex.match(c) for c in candidates):
                result = True
        return result


def context_files(context: Path, ignore: DockerIgnore, source: str) -> list[str]:
    """Context-relative files a COPY ``source`` (a path or glob) sends, after .dockerignore."""
    found = []
    for hit in sorted(glob.glob(str(context / source))) or []:
        path = Path(hit)
        paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in paths:
            rel = p.relative_to(context).as_posix()
            if not ignore.excluded(rel):
                found.append(rel)
    return found


def _substitute(text: str, args: Mapping[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), text)


def _effective(stages: dict[str, list[Instruction]], name: str, keyword: str
               ) -> Instruction | None:
    """The last ``keyword`` instruction in force in stage ``name``, following FROM <stage>."""
    seen = set()
    while name in stages and name not in seen:
        seen.add(name)
        hits = [i for i in stages[name] if i.keyword == keyword]
        if hits:
            return hits[-1]
        name = stages[name][0].args.split()[0]
    return None


def check_dockerfile(text: str, context: Path, ignore: DockerIgnore) -> list[str]:
    """The root Dockerfile: COPY sources reach the build context, the serve image follows the
    contract (entry point, ports, user, health check), the train stage has the [train] extra."""
    problems: list[str] = []
    instructions = parse_dockerfile(text)
    stages = dockerfile_stages(instructions)
    for name in ("builder", "serve", "train"):
        if name not in stages:
            problems.append(f"Dockerfile: no stage named {name!r}")
    args = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            key, _, value = ins.args.partition("=")
            args.setdefault(key.strip(), value.strip().strip('"'))
    names = list(stages)
    for ins in instructions:
        where = f"Dockerfile:{ins.line}: {ins.keyword}"
        if ins.keyword == "ADD":
            problems.append(f"{where}: use COPY (ADD fetches URLs and unpacks archives)")
        if ins.keyword != "COPY":
            continue
        words = ins.words()
        if len(words) < 2:
            problems.append(f"{where}: needs a source and a destination")
            continue
        if "from" in ins.flags:
            source_stage = _substitute(ins.flags["from"], args)
            owner = next(n for n in names if ins in stages[n])
            if source_stage not in names[:names.index(owner)]:
                problems.append(f"{where}: --from={source_stage} is not an earlier stage")
            continue
        for source in words[:-1]:
            source = _substitute(source, args)
            if not context_files(context, ignore, source):
                problems.append(f"{where}: source {source!r} sends no file: it is missing "
                                "from the build context or excluded by .dockerignore")
    serving = [n for n in names if _reaches(stages, n, "serve")]
    for name in serving:
        where = f"Dockerfile stage {name}"
        entry = _effective(stages, name, "ENTRYPOINT")
        cmd = _effective(stages, name, "CMD")
        command = (entry.words() if entry else []) + (cmd.words() if cmd else [])
        if tuple(command) != SERVE_COMMAND or not entry or entry.words() != ["qgnn", "serve"]:
            problems.append(f"{where}: runs {command}, expected ENTRYPOINT [\"qgnn\", \"serve\"]"
                            f" with CMD [\"{MODELS_DIR}\"]")
        user = _effective(stages, name, "USER")
        if user is None or user.args.split(":")[0] != str(RUN_AS_UID):
            problems.append(f"{where}: USER {user.args if user else None!r}; expected numeric "
                            f"uid {RUN_AS_UID} (Kubernetes runAsNonRoot needs a number)")
        exposed = {int(p.split("/")[0]) for i in _chain(stages, name) if i.keyword == "EXPOSE"
                   for p in i.args.split()}
        if exposed != {GRPC_PORT, METRICS_PORT}:
            problems.append(f"{where}: EXPOSE {sorted(exposed)}, expected "
                            f"{[GRPC_PORT, METRICS_PORT]}")
        health = _effective(stages, name, "HEALTHCHECK")
        words = []
        if health and health.args.startswith("CMD "):
            words = Instruction("CMD", {}, health.args[4:], health.line).words()
        if tuple(words) != HEALTH_COMMAND:
            problems.append(f"{where}: HEALTHCHECK runs {words}, expected "
                            f"{list(HEALTH_COMMAND)}")
    if "train" in stages:
        runs = " ".join(i.args for i in stages["train"] if i.keyword == "RUN")
        if "[train]" not in runs:
            problems.append("Dockerfile stage train: no RUN installs the [train] extra")
        user = _effective(stages, "train", "USER")
        if user is None or user.args.split(":")[0] in ("0", "root"):
            problems.append("Dockerfile stage train: runs as root")
    return problems


def _chain(stages: dict[str, list[Instruction]], name: str) -> list[Instruction]:
    out: list[Instruction] = []
    seen = set()
    while name in stages and name not in seen:
        seen.add(name)
        out = stages[name] + out
        name = stages[name][0].args.split()[0]
    return out


def _reaches(stages: dict[str, list[Instruction]], name: str, ancestor: str) -> bool:
    seen = set()
    while name in stages and name not in seen:
        if name == ancestor:
            return True
        seen.add(name)
        name = stages[name][0].args.split()[0]
    return False
