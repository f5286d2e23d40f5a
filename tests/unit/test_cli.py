"""CLI front end without root: help texts, argument errors and clear refusals."""
import os
import subprocess
import sys

import pytest

from hft_packetfilter.cli import main

COMMANDS = ["check", "attach", "detach", "status", "demo", "replay", "kill-switch", "audit", "report"]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_subcommand_has_help_with_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "hftpf-agent" in out


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in COMMANDS:
        assert cmd in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2


def test_bad_xdp_mode_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["attach", "eth0", "--xdp-mode", "turbo"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_config_error_is_reported_with_location(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("exchanges:\n  - name: X\n    host: 10.0.0.300\n    ports: [1]\n    protocol: FIX/TCP\n")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    import hft_packetfilter.cli as cli

    monkeypatch.setattr(cli, "_require_root", lambda what: None)
    assert main(["attach", "eth0", "-c", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:" in err and "exchanges[0].host" in err


def test_status_without_root_says_so(capsys):
    if os.geteuid() != 0:
        assert main(["status"]) == 1
        assert "needs root" in capsys.readouterr().err
        return
    # as root (CI): drop to nobody for the one command
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                        "hft_packetfilter.cli", "status"], capture_output=True, text=True,
                       env={**os.environ, "HOME": "/tmp"})
    assert r.returncode == 1, r.stderr
    assert "needs root" in r.stderr


def test_console_script_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "hft_packetfilter.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "hftpf-agent" in r.stdout
