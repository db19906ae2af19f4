"""The Dockerfiles under images/, checked without a Docker engine.

Each is parsed by buildkit's own parser (the `dockerfile` package wraps the Go code), then checked for what a
build would otherwise reveal late: pinned bases, multi-stage with the runtime copying from a build stage, a
numeric non-root USER, an exec-form entrypoint that is one of pyproject's console scripts, pip extras and
requirement files that exist, COPY sources that exist and survive the Dockerfile's .dockerignore.
"""

from __future__ import annotations

import ast
import fnmatch
import itertools
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import pytest
from chart_tools import ROOT

from edgequant.api import v1alpha1 as api
from edgequant.cli.main import COMMANDS

IMAGES = ROOT / "images"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
ML_FRAMEWORKS = {
    "tensorflow",
    "tensorflow-cpu",
    "torch",
    "torchao",
    "onnx",
    "onnxruntime",
    "tensorrt",
    "pycuda",
    "ai-edge-litert",
}
INSTRUCTIONS = {
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
}
NAMES = ["operator", *(f"quantizer-{family.value}" for family in api.MethodFamily)]


@dataclass
class Stage:
    image: str
    name: str | None
    commands: list[dockerfile.Command] = field(default_factory=list)


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def stages_of(path: Path) -> list[Stage]:
    """Split into stages, resolving FROM against the global ARG defaults declared before it."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for cmd in dockerfile.parse_file(str(path)):
        if cmd.cmd == "ARG" and not stages:
            name, _, default = cmd.value[0].partition("=")
            global_args[name] = default
        elif cmd.cmd == "FROM":
            words = [w for w in cmd.value if w.upper() != "AS"]
            stages.append(Stage(image=expand(words[0], global_args), name=words[1] if len(words) > 1 else None))
        else:
            assert stages, f"{path}: {cmd.original!r} before the first FROM"
            stages[-1].commands.append(cmd)
    return stages


def run_lines(stages: list[Stage]) -> list[str]:
    return [c.value[0] for s in stages for c in s.commands if c.cmd == "RUN"]


def pip_runs(stages: list[Stage], verb: str = "install") -> list[list[str]]:
    """The argument lists of every `pip VERB` in RUN lines (split on &&)."""
    found = []
    for line in run_lines(stages):
        for part in line.split("&&"):
            words = shlex.split(part)
            for i, word in enumerate(words):
                if word.endswith("pip") and words[i + 1 : i + 2] == [verb]:
                    found.append(words[i + 2 :])
    return found


def pip_installs(stages: list[Stage]) -> list[list[str]]:
    return pip_runs(stages, "install")


def installed_extras(stages: list[Stage]) -> set[str]:
    extras: set[str] = set()
    for args in pip_installs(stages):
        for arg in args:
            m = re.fullmatch(r"\.\[([\w,-]+)\]", arg)
            if m:
                extras.update(m.group(1).split(","))
    return extras


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower()


def ignored(rel: str, patterns: list[str]) -> bool:
    """.dockerignore semantics as far as these files use them: last matching pattern wins, `!` re-includes."""
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(rel, pat + "/*") or pat == "**":
            verdict = not negate
    return verdict


@pytest.fixture(params=NAMES)
def image(request: pytest.FixtureRequest) -> tuple[str, list[Stage]]:
    path = IMAGES / request.param / "Dockerfile"
    assert path.is_file(), f"{path} is missing"
    return request.param, stages_of(path)


def test_every_instruction_is_a_dockerfile_instruction(image: tuple[str, list[Stage]]) -> None:
    name, stages = image
    for stage in stages:
        for cmd in stage.commands:
            assert cmd.cmd in INSTRUCTIONS, f"{name}: unknown instruction {cmd.original!r}"
            if cmd.cmd == "COPY":
                assert len(cmd.value) >= 2, f"{name}: COPY needs a source and a destination: {cmd.original!r}"
            if cmd.cmd == "ENV":
                assert cmd.value and len(cmd.value) % 2 == 0, f"{name}: ENV needs KEY=VALUE pairs: {cmd.original!r}"


def test_bases_are_pinned_and_stages_are_multi(image: tuple[str, list[Stage]]) -> None:
    name, stages = image
    assert len(stages) >= 2, f"{name}: build and runtime stages expected"
    for i, stage in enumerate(stages):
        if stage.image in {s.name for s in stages[:i]}:
            continue  # FROM an earlier stage
        assert "$" not in stage.image, f"{name}: FROM {stage.image} uses an ARG without a default"
        repo, _, tag = stage.image.rpartition(":")
        assert "@sha256:" in stage.image or (repo and re.search(r"\d", tag) and tag != "latest"), (
            f"{name}: base {stage.image} is not pinned to a versioned tag or digest"
        )
    build_names = {s.name for s in stages[:-1]}
    copies_from = {
        f.split("=", 1)[1] for c in stages[-1].commands if c.cmd == "COPY" for f in c.flags if f.startswith("--from=")
    }
    assert copies_from and copies_from <= build_names, f"{name}: the runtime stage must copy from a build stage"
    assert not pip_installs([stages[-1]]), f"{name}: the runtime stage installs packages; do that in a build stage"


def test_runs_as_a_numeric_non_root_user(image: tuple[str, list[Stage]]) -> None:
    name, stages = image
    users = [c.value[0] for c in stages[-1].commands if c.cmd == "USER"]
    assert users, f"{name}: no USER in the runtime stage (it would run as root)"
    uid, _, gid = users[-1].partition(":")
    # Numeric, so the kubelet can enforce runAsNonRoot without resolving names.
    assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]} must be a numeric non-zero uid"
    assert not gid or (gid.isdigit() and int(gid) != 0), f"{name}: USER {users[-1]} must have a non-zero gid"
    last_user = max(i for i, c in enumerate(stages[-1].commands) if c.cmd == "USER")
    assert all(c.cmd != "RUN" for c in stages[-1].commands[last_user:]), f"{name}: RUN after USER"


def test_entrypoint_is_a_console_script(image: tuple[str, list[Stage]]) -> None:
    name, stages = image
    entrypoints = [c for c in stages[-1].commands if c.cmd == "ENTRYPOINT"]
    assert len(entrypoints) == 1 and entrypoints[0].json, f"{name}: one exec-form (JSON) ENTRYPOINT expected"
    argv = list(entrypoints[0].value)
    assert argv[0] in SCRIPTS, f"{name}: entrypoint {argv[0]} is not in pyproject [project.scripts] {sorted(SCRIPTS)}"
    module, _, function = SCRIPTS[argv[0]].partition(":")
    source = ROOT / "operator" / (module.replace(".", "/") + ".py")
    assert source.is_file(), (
        f"{name}: console script {argv[0]} points at {module}, which has no {source.relative_to(ROOT)}"
    )
    tree = ast.parse(source.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == function for n in tree.body), (
        f"{name}: {module} has no {function}()"
    )
    if name == "operator":
        assert argv == ["edgequant", "operator"]
        assert "operator" in COMMANDS, "the `edgequant operator` subcommand is missing from edgequant.cli.main.COMMANDS"
    else:
        assert argv == ["edgequant-worker"]


def test_pip_extras_and_requirement_files_exist(image: tuple[str, list[Stage]]) -> None:
    name, stages = image
    extras = installed_extras(stages)
    assert extras, f'{name}: installs no edgequant extra (pip install ".[extra]")'
    assert extras <= set(EXTRAS), f"{name}: extras {sorted(extras - set(EXTRAS))} are not in pyproject"
    for args in pip_installs(stages):
        for flag, value in itertools.pairwise(args):
            if flag in ("-r", "--requirement"):
                assert (ROOT / value).is_file(), f"{name}: requirement file {value} does not exist"


def test_copy_sources_exist_and_are_not_dockerignored(image: tuple[str, list[Stage]]) -> None:
    name, stages = image
    ignore_file = IMAGES / name / "Dockerfile.dockerignore"
    patterns = [ln.strip() for ln in ignore_file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for stage in stages:
        for cmd in stage.commands:
            if cmd.cmd == "COPY" and not any(f.startswith("--from=") for f in cmd.flags):
                for source in cmd.value[:-1]:
                    rel = source.rstrip("/")
                    assert (ROOT / rel).exists(), f"{name}: COPY source {source} does not exist in the repository"
                    assert not ignored(rel, patterns), f"{name}: COPY source {source} is excluded by {ignore_file.name}"
    for junk in (".venv", ".tools", ".cache", "tests"):
        assert ignored(junk, patterns), f"{name}: {junk} would be sent to the build context"


def test_each_image_installs_its_family_and_nothing_heavier() -> None:
    extras = {name: installed_extras(stages_of(IMAGES / name / "Dockerfile")) for name in NAMES}
    assert extras["operator"] == {"operator"}
    operator_deps = {requirement_name(d) for d in EXTRAS["operator"]} | {
        requirement_name(d) for d in PYPROJECT["project"]["dependencies"]
    }
    assert not operator_deps & ML_FRAMEWORKS, f"the operator image would pull {operator_deps & ML_FRAMEWORKS}"
    assert {"tflite", "s3"} <= extras["quantizer-tflite"]
    assert {"torch", "onnx", "s3"} <= extras["quantizer-torch"]
    # onnx-* need ONNX Runtime only: their image stays free of PyTorch (and of TensorFlow).
    assert extras["quantizer-onnx"] == {"onnx", "s3"}
    assert {"tensorrt", "s3"} <= extras["quantizer-tensorrt"]
    for name in NAMES:
        assert "dev" not in extras[name], f"{name}: test dependencies in an image"


def test_torch_image_uses_cpu_wheels_and_tensorrt_image_an_nvidia_base() -> None:
    torch_stages = stages_of(IMAGES / "quantizer-torch" / "Dockerfile")
    installs = [" ".join(a) for a in pip_installs(torch_stages)]
    assert any("--extra-index-url" in line and "[torch" in line for line in installs)
    cpu_index = [
        c.value[0]
        for s in torch_stages
        for c in s.commands
        if c.cmd == "ARG" and c.value[0].startswith("TORCH_CPU_INDEX=")
    ]
    assert cpu_index and cpu_index[0].endswith("/whl/cpu")
    trt = stages_of(IMAGES / "quantizer-tensorrt" / "Dockerfile")
    stage_names = {s.name for s in trt}
    assert all(s.image.startswith("nvcr.io/nvidia/tensorrt:") for s in trt if s.image not in stage_names)
    assert "pycuda" in {requirement_name(d) for d in EXTRAS["tensorrt"]}
    assert any("--system-site-packages" in line for line in run_lines(trt)), (
        "the venv must see the base image's tensorrt"
    )


def test_tflite_nodeps_requirements_are_installed_without_deps() -> None:
    installs = pip_installs(stages_of(IMAGES / "quantizer-tflite" / "Dockerfile"))
    assert ["--no-deps", "-r", "requirements/tflite-nodeps.txt"] in installs


def test_the_operator_image_removes_only_what_the_operator_never_imports() -> None:
    """The operator image drops packages (pip uninstall) and folders (rm -rf) of its venv to stay small; importing
    the operator's modules in a fresh interpreter must touch none of them."""
    stages = stages_of(IMAGES / "operator" / "Dockerfile")
    lean = [s for s in stages if s.name == "lean"]
    assert lean and any(c.cmd == "COPY" and "--from=lean" in c.flags for c in stages[-1].commands), (
        "the operator's runtime stage copies the venv from the `lean` stage"
    )
    removed = {requirement_name(a) for args in pip_runs(lean, "uninstall") for a in args if not a.startswith("-")}
    removed_modules = {
        ".".join(m.group(1).split("/"))
        for line in run_lines(lean)
        for m in re.finditer(r"site-packages/([\w/]+)", line)
    }
    assert {"numpy", "pillow", "pip"} <= removed and "kubernetes.aio" in removed_modules
    probe = (
        "import importlib, json, sys\n"
        "at_start = set(sys.modules)\n"
        "for m in ('edgequant.cli.main', 'edgequant.cli.operator', 'edgequant.controller.handlers',"
        " 'edgequant.controller.sweep_handlers'):\n    importlib.import_module(m)\n"
        "print(json.dumps(sorted(set(sys.modules) - at_start)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    imported = set(json.loads(done.stdout))
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    used = {requirement_name(d) for m in imported if "." not in m for d in owners.get(m, [])}
    assert not used & removed, f"the operator imports {sorted(used & removed)}, which its image uninstalls"
    hits = sorted(m for m in imported for r in removed_modules if m == r or m.startswith(r + "."))
    assert not hits, f"the operator imports {hits}, which its image deletes"


def test_a_source_change_rebuilds_only_the_package_layer(image: tuple[str, list[Stage]]) -> None:
    """Dependencies install before operator/ is copied; after it, pip installs only the package (--no-deps), so a
    build cache keyed on earlier steps survives every change under operator/."""
    name, stages = image
    copied_source = False
    deps_first = False
    for stage in stages:
        for cmd in stage.commands:
            if cmd.cmd == "COPY" and any(v.rstrip("/") == "operator" for v in cmd.value[:-1]):
                copied_source = True
            elif cmd.cmd == "RUN":
                for args in pip_installs([Stage(stage.image, stage.name, [cmd])]):
                    if copied_source:
                        assert "--no-deps" in args, f"{name}: pip resolves dependencies after COPY operator/: {args}"
                    elif any(re.fullmatch(r"\.\[[\w,-]+\]", a) for a in args):
                        deps_first = True
    assert copied_source and deps_first, f"{name}: the extras' dependencies must install before COPY operator/"
