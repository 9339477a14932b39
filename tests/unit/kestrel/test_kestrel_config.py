"""Command line + KESTREL_* environment -> AgentConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from kestrel.config import ConfigError, load_config, parse_listen


def test_cmdline_from_fake_proc(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "cmdline").write_text(
        "console=ttyS0 quiet ip=10.0.0.2::10.0.0.1:255.255.255.0:vm:eth0:off "
        "volant.boot=rootfs volant.debug_shell=1 volant.plugin=hello\n"
    )
    config = load_config({"KESTREL_ROOT": str(tmp_path), "KESTREL_PID1": "0"})
    # Paths are plain strings (pathlib is kept off the boot path).
    assert config.proc == str(tmp_path / "proc")
    assert config.sys == str(tmp_path / "sys")
    assert config.dev == str(tmp_path / "dev")
    assert config.modules_list == str(tmp_path / "etc/kestrel/modules")
    assert config.cmdline["ip"] == "10.0.0.2::10.0.0.1:255.255.255.0:vm:eth0:off"
    assert config.cmdline["volant.boot"] == "rootfs"
    assert config.debug_shell
    assert not config.pid1
    assert not config.vsock  # follows PID 1 unless forced
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8080)


def test_debug_shell_is_off_by_default() -> None:
    config = load_config({"KESTREL_CMDLINE": "console=ttyS0", "KESTREL_PID1": "0"})
    assert not config.debug_shell


def test_env_overrides() -> None:
    config = load_config(
        {
            "KESTREL_CMDLINE": "volant.plugin=x",
            "KESTREL_LISTEN": "127.0.0.1:0",
            "KESTREL_PID1": "1",
            "KESTREL_VSOCK": "0",
            "KESTREL_MODULES": "/tmp/mods",
            "KESTREL_BACKOFF_INITIAL": "0.1",
            "KESTREL_LOG_LINES": "7",
            "VOLANT_MANIFEST": "abc",
        },
        argv=["stage2"],
    )
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 0)
    assert config.pid1 and not config.vsock
    assert config.modules_list == "/tmp/mods"
    assert config.backoff_initial == 0.1
    assert config.log_lines == 7
    assert config.env_manifest == "abc"
    assert config.stage2
    assert config.cmdline == {"volant.plugin": "x"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [(":8080", ("0.0.0.0", 8080)), ("127.0.0.1:9", ("127.0.0.1", 9)), ("[::1]:80", ("::1", 80))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:port", "h:70000"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(text)


def test_bad_numbers_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="KESTREL_BACKOFF_MAX"):
        load_config({"KESTREL_CMDLINE": "", "KESTREL_BACKOFF_MAX": "soon"})


def test_main_rejects_a_bad_listen_address(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from kestrel.main import main

    monkeypatch.setenv("KESTREL_LISTEN", "nonsense")
    monkeypatch.setenv("KESTREL_CMDLINE", "")
    assert main([]) == 2
    assert "must be host:port" in capfd.readouterr().out
