from __future__ import annotations

import pytest

from fpus23_dataset.atomic import replacing_dir, replacing_file


def test_replacing_dir_appears_whole_or_leaves_the_old_folder(tmp_path):
    out = tmp_path / "run"
    with replacing_dir(out, "run.json") as temporary:
        (temporary / "run.json").write_text("1")
    assert (out / "run.json").read_text() == "1"
    with pytest.raises(RuntimeError):
        with replacing_dir(out, "run.json") as temporary:
            (temporary / "run.json").write_text("2")
            raise RuntimeError("interrupted")
    assert (out / "run.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary left behind


def test_replacing_dir_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match=r"no run.json"):
        with replacing_dir(tmp_path / "mine", "run.json"):
            pass
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(FileExistsError, match="already exists"):  # no marker: only a new folder
        with replacing_dir(tmp_path / "mine"):
            pass
    (tmp_path / "empty").mkdir()
    with replacing_dir(tmp_path / "empty", "run.json") as temporary:
        (temporary / "run.json").write_text("1")
    assert (tmp_path / "empty" / "run.json").is_file()


def test_replacing_file_is_renamed_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "a.xml"
    with replacing_file(target) as temporary:
        temporary.write_text("one")
    with pytest.raises(RuntimeError):
        with replacing_file(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "one" and [p.name for p in target.parent.iterdir()] == ["a.xml"]
