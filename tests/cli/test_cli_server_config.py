"""``perdura server --config``: the configuration is checked before anything starts."""

from __future__ import annotations

from pathlib import Path

from cli_support import APP, Cli


def test_server_refuses_an_invalid_configuration_in_one_line(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "perdura.toml"
    config.write_text("[retry]\nbackoff_coefficient = 0.5\n")

    done = cli("server", *APP, "--port", "0", "--config", str(config))

    assert done.code == 1
    assert "retry.backoff_coefficient" in done.error_line()
