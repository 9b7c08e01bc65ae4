"""The compiler's structure, checked: the import graph points one way, and private torch and
Triton APIs sit where their fallbacks are written down (DESIGN.md conventions).

Imports inside functions count as much as those at the top: a cycle hidden in a function
body is still a cycle.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import compiler.capture
import compiler.kernels

ROOT = Path(__file__).resolve().parent.parent
COMPILER = ROOT / "compiler"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """``{module: compiler modules it imports}`` over every file of ``compiler/``."""
    modules = {_module_name(p): p for p in COMPILER.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                for alias in node.names:   # ``from . import x`` may name a module
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_compiler_imports_without_cycles():
    assert _cycles(import_graph()) == []


def test_lowering_and_scheduling_never_import_codegen():
    graph = import_graph()
    upstream = [m for m in graph if m in ("compiler.graph", "compiler.scheduler", "compiler.ir")
                or m.startswith("compiler.lowering")]
    assert upstream
    bad = {m: sorted(t for t in graph[m] if t.startswith("compiler.codegen")) for m in upstream}
    assert {m: t for m, t in bad.items() if t} == {}


def test_the_back_end_depends_on_nothing_above_it():
    """compiler.kernels may import only itself, the artifact and the options."""
    graph = import_graph()
    allowed = {"compiler.artifact", "compiler.config", "compiler", "compiler.kernels"}
    for module in (m for m in graph if m.startswith("compiler.kernels")):
        others = {t for t in graph[module] if not t.startswith("compiler.kernels.")} - allowed
        assert not others, f"{module} imports {sorted(others)}"


TRITON_PRIVATE = re.compile(r"\btriton\.(compiler|backends|runtime|knobs)\b|TensorHandle|"
                            r"mangle_type|CompiledKernel|_StaticCudaLauncher|"
                            r"_cuda_getCurrentRawStream")
TORCH_PRIVATE = re.compile(r"\btorch\.(_[a-zA-Z]\w*)")


def _code_lines(path: Path) -> list[str]:
    """The file's lines less docstrings and comments (code, not prose about code)."""
    tree = ast.parse(path.read_text())
    prose = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            prose |= set(range(body[0].lineno, body[0].end_lineno + 1))
    return [line.split("#")[0] for k, line in enumerate(path.read_text().splitlines(), 1)
            if k not in prose]


def test_private_triton_apis_are_used_only_in_the_back_end():
    users = {str(p.relative_to(ROOT)) for p in COMPILER.rglob("*.py")
             if "kernels" not in p.parts and any(TRITON_PRIVATE.search(line)
                                                 for line in _code_lines(p))}
    assert users == set()
    notes = compiler.kernels.__doc__
    for path in (COMPILER / "kernels").glob("*.py"):
        for line in _code_lines(path):
            for match in TRITON_PRIVATE.finditer(line):
                assert match.group(0).split(".")[-1] in notes, (path.name, match.group(0))


def test_every_private_torch_api_is_listed_with_its_fallback():
    notes = compiler.capture.__doc__ + compiler.kernels.__doc__
    used = {}
    for path in COMPILER.rglob("*.py"):
        for line in _code_lines(path):
            for match in TORCH_PRIVATE.finditer(line):
                used.setdefault(f"torch.{match.group(1)}", set()).add(path.name)
    assert used, "the scan found no private torch API at all: the pattern is broken"
    missing = {api: sorted(files) for api, files in used.items() if api not in notes}
    assert missing == {}


def test_every_op_that_computes_has_exactly_one_snippet():
    from compiler.codegen.ops import OP_CODE
    from compiler.ir import PSEUDO_OPS, OpName
    assert set(OP_CODE) == set(OpName) - PSEUDO_OPS
    assert all(isinstance(name, OpName) for name in OP_CODE)


def test_an_unknown_op_name_fails_where_the_ir_is_built():
    import pytest
    import torch
    from compiler.ir import Const, Op, OpName
    assert Op("relu", (Const(1.0, torch.float32),), torch.float32).op is OpName.RELU
    with pytest.raises(ValueError, match="relux"):
        Op("relux", (Const(1.0, torch.float32),), torch.float32)


@pytest.mark.parametrize("package", ["compiler", "compiler.autotune", "storage"])
def test_no_lazy_public_name_is_shadowed_by_a_submodule(package):
    # A package's __getattr__ only runs for names it lacks; importing a submodule of the same
    # name sets that attribute to the module, and the public function is never reached again.
    mod = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(mod.__path__)}
    assert not submodules & set(mod._PUBLIC), submodules & set(mod._PUBLIC)
