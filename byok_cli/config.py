"""Where the portal is and how to authenticate: options, then ``BYOK_URL``/``BYOK_TOKEN``, then a config file."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from byok_cli.errors import USAGE, CliError


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "byok" / "config.toml"


@dataclass(frozen=True)
class Settings:
    url: str
    token: str
    verify_tls: bool = True
    timeout: float = 60.0


def load(url: str | None, token: str | None, config_path: str | None, profile: str | None) -> Settings:
    """The settings in force: command-line options win, then the environment, then the config file.

    The file (``~/.config/byok/config.toml`` by default, ``BYOK_CONFIG`` or ``--config``) holds
    ``url`` and ``token`` at the top, or in ``[profiles.NAME]`` tables chosen with ``--profile``
    or ``BYOK_PROFILE``. Keep it readable by you only: it holds a token.
    """
    path = Path(config_path or os.environ.get("BYOK_CONFIG") or default_config_path())
    file: dict[str, object] = {}
    if path.is_file():
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CliError(f"cannot read {path}: {exc}", USAGE) from exc
        chosen = profile or os.environ.get("BYOK_PROFILE")
        if chosen:
            profiles = document.get("profiles", {})
            if not isinstance(profiles, dict) or chosen not in profiles:
                raise CliError(f"no profile {chosen!r} in {path}", USAGE)
            file = dict(profiles[chosen])
        else:
            file = {k: v for k, v in document.items() if k != "profiles"}
    elif config_path:
        raise CliError(f"no config file at {path}", USAGE)
    final_url = url or os.environ.get("BYOK_URL") or str(file.get("url") or "")
    final_token = token or os.environ.get("BYOK_TOKEN") or str(file.get("token") or "")
    if not final_url:
        raise CliError(f'no portal URL: set BYOK_URL, pass --url, or put url = "…" in {path}', USAGE)
    if not final_token:
        raise CliError(f'no API token: set BYOK_TOKEN, pass --token, or put token = "byok_…" in {path}', USAGE)
    return Settings(
        url=final_url.rstrip("/"),
        token=final_token,
        verify_tls=bool(file.get("verify_tls", True)) and os.environ.get("BYOK_INSECURE", "") != "1",
        timeout=float(str(file.get("timeout", 60.0))),
    )
