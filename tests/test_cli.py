"""User mistakes get one line naming the problem and the fix, and exit 1; never a traceback."""
from __future__ import annotations

import builtins
import subprocess
import sys

import pytest

from fpus23_dataset.cli import main


def _one_line_error(capsys, argv: list[str], *expected: str) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_build_out_pointing_at_a_file(procedural_source, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    _one_line_error(capsys, ["build", str(procedural_source), "--out", str(tmp_path / "taken"), "--quiet"], "not a folder")
    _one_line_error(capsys, ["build", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--quiet"], "no such file or folder")
    _one_line_error(capsys, ["build", str(procedural_source), "--out", str(tmp_path / "o"), "--version", "1.0"], "X.Y.Z")


def test_export_mistakes(procedural_build, tmp_path, capsys):
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "notes.txt").write_text("mine")
    _one_line_error(capsys, ["export", str(procedural_build), str(tmp_path / "existing")], "already exists")
    _one_line_error(capsys, ["export", str(procedural_build), str(tmp_path / "new"), "--config", "plane"], "--config bounds")
    _one_line_error(capsys, ["export", str(tmp_path / "existing"), str(tmp_path / "new")], "not an fpus23 build")
    assert not (tmp_path / "new").exists()


def test_stats_plot_without_matplotlib(procedural_build, tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    _one_line_error(capsys, ["stats", str(procedural_build), "--plot", str(tmp_path / "p.png")], "matplotlib", "pip install")


def test_synth_refuses_a_bad_stream_count_and_an_earlier_render(tmp_path, capsys):
    _one_line_error(capsys, ["synth", str(tmp_path / "o"), "--streams", "0"], "--streams 0", "between 1 and 1000")
    assert main(["synth", str(tmp_path / "o"), "--streams", "2", "--frames", "2", "--plane-images", "0", "--workers", "1"]) == 0
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "o").rglob("*"))
    capsys.readouterr()
    _one_line_error(capsys, ["synth", str(tmp_path / "o"), "--streams", "3", "--frames", "2"], "already exists")
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "o").rglob("*")) == before  # not mixed with a new render


def test_synth_with_bad_annotations_or_stream(shared_annotations, tmp_path, capsys):
    _one_line_error(capsys, ["synth", str(tmp_path / "o"), "--annotations", str(tmp_path / "nope")], "no such file or folder")
    _one_line_error(capsys, ["synth", str(tmp_path / "o"), "--annotations", str(shared_annotations), "--stream", "stream_x"],
                    "no such stream", "stream_x")
    assert not (tmp_path / "o").exists()


def test_publish_offline_or_with_a_wrong_tag(procedural_build, capsys, monkeypatch):
    _one_line_error(capsys, ["publish", str(procedural_build), "--repo-id", "org/x", "--tag", "v9.9.9"], "does not match", "v1.2.3")
    # HF_HUB_OFFLINE is read when huggingface_hub is imported: a fresh process, as a user would run it.
    done = subprocess.run(
        [sys.executable, "-m", "fpus23_dataset.cli", "publish", str(procedural_build), "--repo-id", "org/x", "--tag", "v1.2.3"],
        capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"}, timeout=120,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "HF_HUB_OFFLINE" in done.stderr, done.stderr


@pytest.mark.parametrize("command", ["stats", "diff", "fiftyone"])
def test_a_path_that_is_not_a_build(command, tmp_path, capsys):
    argv = {"stats": ["stats", str(tmp_path)], "diff": ["diff", str(tmp_path), str(tmp_path)],
            "fiftyone": ["fiftyone", str(tmp_path), "--database-dir", str(tmp_path / "db")]}[command]
    if command == "fiftyone":
        pytest.importorskip("fiftyone", reason="the [fiftyone] extra is not installed")
    _one_line_error(capsys, argv, "not an fpus23 build")


def test_a_missing_extra_is_named_with_its_install_command(procedural_build, tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_fiftyone(name, *args, **kwargs):
        if name == "fiftyone" or name.startswith("fiftyone."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fiftyone)
    _one_line_error(capsys, ["fiftyone", str(procedural_build), "--database-dir", str(tmp_path / "db")],
                    "pip install 'fpus23[fiftyone]'")


@pytest.mark.parametrize("module, prog", [("fpus23_dataset.cli", "fpus23"), ("cvat_plugin.cli", "fpus23-cvat"),
                                          ("baselines.cli", "fpus23-baselines")])
def test_version_and_help_explain_positionals_and_show_defaults(module, prog, capsys):
    import argparse
    import importlib
    from importlib.metadata import version

    cli = importlib.import_module(module)
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"{prog} {version('fpus23')}\n"
    commands = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, command in commands.items():
        text = command.format_help()
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.option_strings:
                assert action.help, f"{prog} {name}: positional {action.dest} has no help"
            elif action.default not in (None, False, argparse.SUPPRESS):
                assert action.help and f"(default: {action.default})" in " ".join(text.split()), (prog, name, action.dest)
