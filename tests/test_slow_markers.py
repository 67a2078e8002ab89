"""Every test that spawns processes or loads the real SmolLM2 is marked ``slow``: by hand in its
module, or by tests/conftest.py when it uses a process fixture (`PROCESS_FIXTURES`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import PROCESS_FIXTURES

TESTS = Path(__file__).resolve().parent
# what starts a process or the real model, written in a test, a module fixture or a module helper
SPAWNS = re.compile(
    r"subprocess\.(Popen|run|check_output|check_call|call)\b|\bPopen\(|multiprocessing|get_context\("
    r"|\bstart_cluster\(|\bMultiEngine\(|\bSupervisor\(|\bstart_redis\(|\bRtspServer\(|\bServeProcess\("
    r"|\bensure_smollm2\(|model=\"default\"|\"--model\", \"default\"|durable_writer"
)

# matched by the pattern, yet start nothing (the match is in text they check)
NOT_SPAWNING = {"tests/deploy/test_dockerfile.py::test_default_model_assembled_at_build_time"}


def _slow(decorators: list[ast.expr]) -> bool:
    return any("slow" in ast.unparse(d) for d in decorators)


def _fixture(node: ast.AST) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
        "fixture" in ast.unparse(d) for d in node.decorator_list)


def unmarked(path: Path) -> list[str]:
    src = path.read_text()
    tree = ast.parse(src)
    if any(isinstance(n, ast.Assign) and "pytestmark" in ast.unparse(n.targets[0]) and "slow" in ast.unparse(n.value)
           for n in tree.body):
        return []
    funcs = {n.name: ast.get_source_segment(src, n) for n in tree.body  # module fixtures, helpers, classes
             if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
             and not n.name.lower().startswith("test")}
    spawning = {name for name, body in funcs.items() if SPAWNS.search(body)} | set(PROCESS_FIXTURES)
    for _ in range(3):  # module fixtures and helpers that use spawning ones
        uses = re.compile(rf"\b({'|'.join(map(re.escape, spawning))})\b")
        spawning |= {name for name, body in funcs.items() if uses.search(body)}
    uses = re.compile(rf"\b({'|'.join(map(re.escape, spawning))})\b")
    out = []

    def visit(nodes: list[ast.stmt], slow: bool) -> None:
        for n in nodes:
            if isinstance(n, ast.ClassDef):
                visit(n.body, slow or _slow(n.decorator_list))
            elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test"):
                if slow or _slow(n.decorator_list) or {a.arg for a in n.args.args} & set(PROCESS_FIXTURES):
                    continue
                body = ast.get_source_segment(src, n)
                if SPAWNS.search(body) or uses.search(body):
                    out.append(f"{path.relative_to(TESTS.parent)}::{n.name}")

    visit(tree.body, False)
    return out


def test_tests_that_spawn_processes_are_marked_slow():
    missing = [t for p in sorted(TESTS.rglob("test_*.py")) for t in unmarked(p) if t not in NOT_SPAWNING]
    assert not missing, "mark these @pytest.mark.slow (they spawn processes or load SmolLM2):\n" + "\n".join(missing)
