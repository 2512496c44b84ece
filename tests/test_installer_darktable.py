"""``exposure-engine plugins install|uninstall darktable``: files, luarc line, idempotence, config folders."""
from __future__ import annotations

from pathlib import Path

import pytest

from exposure_engine.cli import main
from exposure_engine.installers import darktable as inst


def test_install_copies_the_plugin_writes_the_engine_path_and_adds_one_require_line(tmp_path):
    lua = inst.install(tmp_path, engine="/opt/venv/bin/exposure-engine")
    assert lua == tmp_path / "lua" / "exposure_auto_retouch.lua"
    assert lua.read_bytes() == inst.plugin_source().read_bytes()
    assert (tmp_path / "lua" / "exposure_auto_retouch.engine").read_text().strip() == "/opt/venv/bin/exposure-engine"
    assert (tmp_path / "luarc").read_text().splitlines() == [inst.REQUIRE_LINE]


def test_install_is_idempotent_and_keeps_the_users_luarc(tmp_path):
    (tmp_path / "luarc").write_text('require "tools/script_manager"\n')
    inst.install(tmp_path)
    inst.install(tmp_path)
    lines = (tmp_path / "luarc").read_text().splitlines()
    assert lines == ['require "tools/script_manager"', inst.REQUIRE_LINE]


def test_a_require_written_by_hand_is_not_duplicated(tmp_path):
    (tmp_path / "luarc").write_text("require('exposure_auto_retouch')\n")
    inst.install(tmp_path)
    assert (tmp_path / "luarc").read_text() == "require('exposure_auto_retouch')\n"


def test_uninstall_removes_only_its_files_and_its_line(tmp_path):
    (tmp_path / "luarc").write_text('require "a"\n')
    inst.install(tmp_path)
    (tmp_path / "lua" / "other.lua").write_text("-- someone else's")
    assert inst.uninstall(tmp_path) is True
    assert (tmp_path / "luarc").read_text() == 'require "a"\n'
    assert sorted(p.name for p in (tmp_path / "lua").iterdir()) == ["other.lua"]
    assert inst.uninstall(tmp_path) is False  # nothing left to remove


def test_status_reports_what_is_installed(tmp_path):
    assert inst.status(tmp_path)["installed"] is False
    inst.install(tmp_path)
    s = inst.status(tmp_path)
    assert s["installed"] is True and s["luarc_loads_it"] is True


@pytest.mark.parametrize("platform, env, expected", [
    ("linux", {"HOME": "/home/u"}, "/home/u/.config/darktable"),
    ("linux", {"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}, "/x/darktable"),
    ("darwin", {"HOME": "/Users/u"}, "/Users/u/.config/darktable"),
    ("win32", {"USERPROFILE": "C:/Users/u", "LOCALAPPDATA": "C:/Users/u/AppData/Local"},
     "C:/Users/u/AppData/Local/darktable"),
])
def test_default_config_folder_per_platform(platform, env, expected):
    assert inst.config_dir(env, platform) == Path(expected)


def test_unwritable_folder_is_reported_with_its_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(inst.InstallError, match=str(blocker)):
        inst.install(blocker)


def test_cli_install_and_uninstall(tmp_path, capsys):
    assert main(["plugins", "install", "darktable", "--folder", str(tmp_path)]) == 0
    assert "installed the darktable plug-in" in capsys.readouterr().out
    assert (tmp_path / "lua" / "exposure_auto_retouch.lua").is_file()
    assert main(["plugins", "uninstall", "darktable", "--folder", str(tmp_path)]) == 0
    assert not (tmp_path / "lua" / "exposure_auto_retouch.lua").exists()


def test_cli_reports_install_errors_as_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["plugins", "install", "darktable", "--folder", str(blocker)]) == 2
    assert "cannot install into" in capsys.readouterr().err
