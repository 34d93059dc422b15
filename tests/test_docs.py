"""The docs stay true: every public name is documented, the picture is current."""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

import trio_heartbeat

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_public_name_is_in_the_reference() -> None:
    reference = (DOCS / "reference.rst").read_text()
    documented = set(re.findall(r"^\.\. (?:auto)?\w+:: (\w+)", reference, flags=re.M))
    assert set(trio_heartbeat.__all__) - documented == set()
    assert documented - set(trio_heartbeat.__all__) - {"trio_heartbeat"} == set()


def test_every_public_class_and_function_has_a_docstring() -> None:
    for name in trio_heartbeat.__all__:
        obj = getattr(trio_heartbeat, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
            assert obj.__module__ == "trio_heartbeat", name


def test_timeline_picture_matches_a_fresh_recording() -> None:
    spec = importlib.util.spec_from_file_location("docs_timeline", DOCS / "timeline.py")
    assert spec is not None and spec.loader is not None
    timeline = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = timeline
    spec.loader.exec_module(timeline)
    fresh = timeline.build()
    committed = (DOCS / "_static" / "timeline.svg").read_text()
    assert fresh == committed, (
        "docs/_static/timeline.svg is stale: python docs/timeline.py"
    )
    assert "client declares the server dead (43 s)" in fresh
    assert "server kicks the client (54 s)" in fresh


def _module(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_stall_picture_matches_a_fresh_recording() -> None:
    stall = _module(DOCS / "stall_timeline.py", "docs_stall_timeline")
    fresh = stall.build()
    committed = (DOCS / "_static" / "stall.svg").read_text()
    assert fresh == committed, (
        "docs/_static/stall.svg is stale: python docs/stall_timeline.py"
    )
    assert "B kicked at 74.5 s: silent 30 s by the server&#x27;s awake clock" in fresh


def test_detection_table_matches_the_benchmark(tmp_path: Path) -> None:
    detection = _module(DOCS.parent / "benchmarks" / "detection.py", "bench_detect")
    table = tmp_path / "table.rst"
    argv = sys.argv
    sys.argv = ["detection.py", "--rst", str(table)]
    try:
        detection.main()
    finally:
        sys.argv = argv
    committed = (DOCS / "_static" / "detection_table.rst").read_text()
    assert table.read_text() == committed, (
        "docs/_static/detection_table.rst is stale: "
        "python benchmarks/detection.py --rst docs/_static/detection_table.rst"
    )


def test_benchmark_table_and_chart_match_the_recorded_results() -> None:
    path = DOCS.parent / "benchmarks" / "server.py"
    spec = importlib.util.spec_from_file_location("bench_server", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    recorded = json.loads((DOCS / "_static" / "benchmarks.json").read_text())
    runs = recorded["runs"]
    assert (DOCS / "_static" / "benchmarks_table.rst").read_text() == bench.rst_table(
        runs
    )
    assert (DOCS / "_static" / "benchmarks.svg").read_text() == bench.svg_chart(runs)
    assert recorded["ratios"] == bench.ratios_of(runs)
    names = {run["server"] for run in runs}
    assert {"trio_heartbeat", "bare-trio", "bare-trio-frozen", "legacy-c"} <= names


def _rst_pages() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(DOCS.glob("*.rst"))}


def test_code_in_the_docs_comes_from_files_the_suite_runs() -> None:
    # Code a reader copies is either a whole file under docs/examples (run by
    # the suite: tests/test_docs_examples.py, or a shell session that runs it)
    # or a console session (tests/test_sessions.py). Literal blocks (::) are
    # for diagrams and formats, never for code.
    sessions = "\n".join(_rst_pages().values())
    tested = (DOCS.parent / "tests" / "test_docs_examples.py").read_text()
    for name, text in _rst_pages().items():
        assert not re.search(r"code-block:: (python|sh|bash|shell)", text), name
        for block in re.findall(r"::\n\n((?:[ ]{3,}.*\n|\n)+)", text):
            code = re.search(r"^\s*(\$ |import |async def |python )", block, re.M)
            assert not code, f"{name}: code in a literal block:\n{block}"
        for include, options in re.findall(
            r"^\.\. literalinclude:: (\S+)\n((?:[ ]+:.*\n)*)", text, flags=re.M
        ):
            assert include.startswith("examples/"), f"{name}: {include}"
            assert not re.search(r":(start-at|end-before|lines|pyobject):", options), (
                f"{name}: {include} must be included whole"
            )
            file = include.removeprefix("examples/")
            assert f":download:`{file} <{include}>`" in text or (
                re.search(rf":download:`{re.escape(file)}\s+<{include}>`", text)
            ), f"{name}: no download link for {include}"
            assert (DOCS / include).exists(), include
            if file.endswith(".py") and not file.startswith("test_"):
                runs = f"python {file}" in sessions or f'load("{file[:-3]}")' in tested
                assert runs, f"{include} is shown but the suite never runs it"


def test_adaptive_picture_matches_its_recorded_run() -> None:
    adaptive = _module(DOCS.parent / "benchmarks" / "adaptive.py", "bench_adaptive")
    run = json.loads((DOCS / "_static" / "adaptive.json").read_text())
    assert (DOCS / "_static" / "adaptive.svg").read_text() == adaptive.draw(run), (
        "docs/_static/adaptive.svg is stale: python benchmarks/adaptive.py "
        "--draw docs/_static/adaptive.json --svg docs/_static/adaptive.svg"
    )
    summary = adaptive.summary(run)
    assert run["summary"] == summary
    # What the mobile how-to says the run shows.
    assert summary["learned_interval_s"] < summary["nat_limit_s"]
    assert summary["links_lost"] == 1
    assert summary["links_lost_after_settling"] == 0


def test_scale_picture_and_table_match_the_recorded_run() -> None:
    scale = _module(DOCS.parent / "benchmarks" / "scale.py", "bench_scale")
    run = json.loads((DOCS / "_static" / "scale.json").read_text())
    assert (DOCS / "_static" / "scale.svg").read_text() == scale.draw(run), (
        "docs/_static/scale.svg is stale: python benchmarks/scale.py "
        "--draw docs/_static/scale.json --svg docs/_static/scale.svg"
    )
    page = (DOCS / "benchmarks.rst").read_text()
    # The figures the page quotes are the recorded run's.
    for figure in (
        f"{run['accept_all_s']} s",
        f"{run['rss_per_connection_kb']} KB",
        f"{run['answered']:,} of {run['sent']:,}",
        f"{run['pong_p50_ms']:.2f} / {run['pong_p99_ms']:.2f} ms",
        f"{run['pong_max_ms']} ms",
        f"{run['burst_pong_p99_ms']} / {run['burst_pong_max_ms']} ms",
        f"{run['kick_server_max_ms']} ms",
        f"{run['kick_client_p99_ms']} ms",
        f"{run['kick_pong_p50_ms']} / {run['kick_pong_p99_ms']} / "
        f"{run['kick_pong_max_ms']} ms",
        f"{run['loadgen_cpu_per_heartbeat_us']} µs",
        f"{run['cpu_per_heartbeat_us']} µs",
    ):
        assert figure in page, figure
    assert run["unanswered"] == run["unexpected_ends"] == 0
    assert run["kicked"] == run["silent"]


def test_the_presence_figures_are_the_recorded_runs() -> None:
    run = json.loads((DOCS / "_static" / "presence.json").read_text())["summary"]
    page = (DOCS / "benchmarks.rst").read_text()
    for figure in (
        f"{run['redis_commands_per_s']:,} per second",
        f"{run['list_ms']} ms",
        f"{run['list_cli_ms']} ms",
        f"{run['dead_node_gone_s']} s after the kill",
        f"{run['cpu_ratio_on_off']}\N{MULTIPLICATION SIGN}",
    ):
        assert figure in page, figure
    assert run["sessions"] == 10_000


def test_the_production_examples_name_what_exists() -> None:
    """alerts.yml names only metrics the server exports; the systemd unit's
    ExecStart is a command line ``serve`` accepts."""
    from trio_heartbeat import ServerMetrics
    from trio_heartbeat._cli._options import build_parser, server_config
    from trio_heartbeat._metrics import empty_lag_buckets
    from trio_heartbeat._prometheus import render

    full = ServerMetrics(
        handshake_failures={"7": 1},
        disconnects={"heartbeat_timeout": 1},
        frames_received={"ping": 1},
        loop_lag_buckets=empty_lag_buckets(),
    )
    exported = set(re.findall(r"^(trio_heartbeat_\w+)", render(full).decode(), re.M))
    alerts = (DOCS / "examples" / "alerts.yml").read_text()
    named = set(re.findall(r"trio_heartbeat_\w+", alerts))
    assert named and named <= exported, named - exported
    unit = (DOCS / "examples" / "trio-heartbeat.service").read_text()
    unit = unit.replace("\\\n", " ")  # systemd's line continuations
    command = re.search(r"^ExecStart=\S+ -m trio_heartbeat (.*)$", unit, re.M)
    assert command is not None
    args = build_parser().parse_args(command.group(1).split())
    config = server_config(args)
    assert (args.workers, args.metrics_port, args.log_format) == (2, 9105, "json")
    assert config.timeout == 90
