"""What never goes in the configuration file, and where it comes from instead: the Runway API key and the other
credentials (their systemd credential names and sources), the messages that refuse them in the file, the
masking every configuration error goes through, and ``load_api_key``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final

from runwatch.errors import ConfigError, MissingKey, Problem

if TYPE_CHECKING:
    from runwatch.config import Config

CREDENTIAL_NAME: Final = "runway_api_key"
DB_CREDENTIAL_NAME: Final = "runwatch_db_password"
HTTP_CREDENTIAL_NAME: Final = "runwatch_http_token"
HTTP_TOKEN_SOURCES: Final = (
    f"$RUNWATCH_HTTP_TOKEN, a systemd credential named {HTTP_CREDENTIAL_NAME} (LoadCredential=) "
    "or a file named by http.token_file"
)
WEBHOOK_CREDENTIAL_NAME: Final = "runwatch_webhook_secret"
_ENV_KEYS: Final = ("RUNWAYML_API_SECRET", "RUNWAY_API_KEY")  # the SDK's name first
_KEY_RE = re.compile(r"key_[0-9a-fA-F]{32,}")  # Runway keys are key_ + 128 hex; a truncated one is still secret
_KEY_REFUSED = (
    "the Runway API key never goes in the config file; give it through RUNWAYML_API_SECRET or RUNWAY_API_KEY, "
    f"a systemd credential named {CREDENTIAL_NAME} (LoadCredential=), or a file named by runway.api_key_file"
)
_SECRET_NAMES = frozenset(
    {
        "api_key",
        "apikey",
        "api_secret",
        "secret",
        "key",
        "token",
        "runwayml_api_secret",
        "runway_api_key",
        "authorization",
    }
)
_AWS_REFUSED = (
    "S3 credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
    "profiles, instance roles), never from the config file"
)
DB_PASSWORD_SOURCES: Final = (
    "PGPASSWORD, a password file (~/.pgpass, or the one PGPASSFILE names) or a systemd credential named "
    f"{DB_CREDENTIAL_NAME} (LoadCredential=)"
)
_DB_PASSWORD_REFUSED = f"the database password never goes in the config file; give it through {DB_PASSWORD_SOURCES}"
_HTTP_TOKEN_REFUSED = f"the HTTP token never goes in the config file; give it through {HTTP_TOKEN_SOURCES}"


def _error(label: str, problems: list[Problem], summary: str = "invalid configuration") -> ConfigError:
    """The error to raise; anything key-like is masked, so no message can ever carry a key."""

    def mask(text: str) -> str:
        return _KEY_RE.sub("key_…", text)

    unique = list(dict.fromkeys(dataclasses.replace(p, path=mask(p.path), message=mask(p.message)) for p in problems))
    if unique and all(isinstance(p, MissingKey) for p in unique):
        summary = "a required key is missing" if len(unique) == 1 else f"{len(unique)} required keys are missing"
        return ConfigError(mask(label), unique, summary)
    return ConfigError(mask(label), unique, summary)


def load_api_key(config: Config, env: Mapping[str, str] = os.environ) -> str:
    """The Runway API key from the first source that has one, surrounding whitespace stripped.

    Sources, in order: RUNWAYML_API_SECRET, RUNWAY_API_KEY, $CREDENTIALS_DIRECTORY/runway_api_key (systemd
    LoadCredential=), runway.api_key_file. An unset or empty source is skipped; one that is present but
    unreadable or malformed is an error rather than a silent fall-through to another key.
    """
    label = str(config.path) if config.path else "runwatch"
    credential = f"$CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME}"

    def read(source: str) -> tuple[str | None, str]:
        """The source's text (or None), and what to say when it holds no key."""
        if source in _ENV_KEYS:
            return env.get(source), "not set" if source not in env else "set but empty"
        if source == credential:
            folder = env.get("CREDENTIALS_DIRECTORY")
            if not folder:
                return None, f"CREDENTIALS_DIRECTORY not set (systemd: LoadCredential={CREDENTIAL_NAME}:FILE)"
            file = Path(folder) / CREDENTIAL_NAME
        elif config.runway.api_key_file is None:
            return None, "not set in the config"
        else:
            file = config.runway.api_key_file
        try:
            return file.read_text("utf-8"), f"{file}: empty"
        except FileNotFoundError:
            return None, f"{file}: no such file"
        except UnicodeDecodeError as exc:
            raise _error(label, [Problem(source, f"{file}: not UTF-8 text")]) from exc
        except OSError as exc:
            raise _error(label, [Problem(source, f"{file}: cannot read: {exc.strerror or exc}")]) from exc

    tried: list[Problem] = []
    for source in (*_ENV_KEYS, credential, "runway.api_key_file"):
        text, why = read(source)
        key = (text or "").strip()
        if not key:
            tried.append(Problem(source, why))
        elif any(c.isspace() or not c.isprintable() for c in key):
            # Only the ends are stripped: whitespace inside is a broken paste and would break the header.
            raise _error(label, [Problem(source, "the key has whitespace or control characters inside it")])
        else:
            return key
    raise _error(label, tried, "no Runway API key found; tried, in order:")
