"""What every ``mwl-bridge`` subcommand shares: loading the settings, opening the store."""

from __future__ import annotations

import argparse
import sys

from bridge.app.settings import ConfigError, Settings, find_config, load_settings
from bridge.store import Store, open_store

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def settings_from(args: argparse.Namespace) -> Settings | None:
    """The settings for ``--config`` (or the defaults); None after printing every error."""
    try:
        return load_settings(find_config(getattr(args, "config", None)))
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return None


def open_configured_store(settings: Settings) -> Store:
    """The configured store, migrated; commands may run beside the daemon."""
    return open_store(settings.store, settings.data_dir)
