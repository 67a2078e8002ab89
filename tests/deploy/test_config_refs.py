"""Every STREAMVQA_* variable and every CLI flag in Dockerfile / compose / k8s exists in the server."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from streamvqa.cli import build_parser
from streamvqa.server.settings import ServerSettings, env_names

from .conftest import DEPLOY, ROOT, k8s_docs, load_yaml, pod_spec

ENV_RE = re.compile(r"\bSTREAMVQA_[A-Z0-9_]+\b")
FILES = [ROOT / "Dockerfile", ROOT / "docker-compose.yml",
         *sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml", ".conf", ".json"})]


def _known_env() -> set[str]:
    """ServerSettings fields, plus STREAMVQA_* names the package itself reads (e.g. STREAMVQA_CACHE)."""
    known = set(env_names())
    for py in (ROOT / "streamvqa").rglob("*.py"):
        known.update(re.findall(r"""["'](STREAMVQA_[A-Z0-9_]+)["']""", py.read_text()))
    return known


def test_every_env_var_exists():
    known = _known_env()
    assert "STREAMVQA_CACHE" in known and "STREAMVQA_TOPOLOGY" in known
    unknown = {f"{p.relative_to(ROOT)}: {v}" for p in FILES for v in ENV_RE.findall(p.read_text())
               if v not in known}
    assert not unknown, f"variables the server does not read: {sorted(unknown)}"


def test_env_values_are_valid_settings():
    """The values set are accepted by ServerSettings (types, choices, ranges)."""
    env_sets = [{k: str(v) for k, v in d["data"].items() if k.startswith("STREAMVQA_")}
                for _, d in k8s_docs() if d["kind"] == "ConfigMap"]
    for svc in load_yaml(ROOT / "docker-compose.yml")["services"].values():
        env = svc.get("environment") or {}
        env_sets.append({k: str(v) for k, v in env.items() if k.startswith("STREAMVQA_")})
    env_sets.append(dict(re.findall(r"\b(STREAMVQA_[A-Z0-9_]+)=(\S+)", (ROOT / "Dockerfile").read_text())))
    for env in filter(None, env_sets):
        ServerSettings.from_env(env)  # raises ValueError with the reason


def _dockerfile_argv() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M).group(1))
    return entry + cmd


def _command_lines() -> list[tuple[str, list[str]]]:
    """(where, argv) for every streamvqa invocation; the image's ENTRYPOINT is `streamvqa`."""
    out = [("Dockerfile", _dockerfile_argv())]
    for name, svc in load_yaml(ROOT / "docker-compose.yml")["services"].items():
        if str(svc.get("image", "")).startswith("streamvqa") and "command" in svc:
            cmd = svc["command"]
            out.append((f"compose:{name}", ["streamvqa", *(shlex.split(cmd) if isinstance(cmd, str) else cmd)]))
    for path, doc in k8s_docs():
        spec = pod_spec(doc)
        for c in (spec or {}).get("containers", []):
            if c["image"].startswith("streamvqa"):
                argv = (c.get("command") or ["streamvqa"]) + c.get("args", [])
                out.append((f"{path.name}:{doc['metadata']['name']}/{c['name']}", argv))
    return out


def test_command_lines_found():
    where = [w for w, _ in _command_lines()]
    assert "Dockerfile" in where and any(w.startswith("compose:") for w in where)
    assert any(w.startswith("server.yaml") for w in where)
    roles = {argv[2] for w, argv in _command_lines() if w.startswith("node.yaml") and argv[1] == "worker"}
    assert roles == {"kvstore", "encoder", "answer"}, roles


@pytest.mark.parametrize("where,argv", _command_lines(), ids=[w for w, _ in _command_lines()])
def test_cli_flags_exist(where, argv):
    assert argv[0] == "streamvqa", f"{where}: expected the streamvqa entry point, got {argv}"
    parser = build_parser()
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{where}: `{' '.join(argv)}` is rejected by the streamvqa parser")
    assert args.command in {"serve", "demo", "worker"}, where
    sub = parser._subparsers._group_actions[0].choices[args.command]  # the real serve/demo parser
    flags = {o for a in sub._actions for o in a.option_strings}
    for tok in argv[2:]:
        if tok.startswith("--"):
            assert tok.split("=")[0] in flags, f"{where}: {tok} is not a `streamvqa {args.command}` flag"
