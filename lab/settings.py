"""Process settings from the environment (never from files in the repo).

Secrets (provider and broker keys) are ``SecretStr``: they print as ``**********`` and are
only revealed at the moment a request is signed.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from lab.errors import ConfigError

__all__ = ["Settings", "get_settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    lab_home: Path = Field(default=Path(".lab"), validation_alias="LAB_HOME")
    lab_database_url: str | None = Field(default=None, validation_alias="LAB_DATABASE_URL")
    lab_config: Path = Field(default=Path("config/trading.json"), validation_alias="LAB_CONFIG")
    ray_address: str | None = Field(default=None, validation_alias="RAY_ADDRESS")
    serve_url: str = Field(default="http://127.0.0.1:8000", validation_alias="LAB_SERVE_URL")
    serve_token: SecretStr | None = Field(default=None, validation_alias="LAB_SERVE_TOKEN")
    alphavantage_api_key: SecretStr | None = Field(default=None, validation_alias="ALPHAVANTAGE_API_KEY")
    coingecko_api_key: SecretStr | None = Field(default=None, validation_alias="COINGECKO_API_KEY")
    alpaca_api_key_id: SecretStr | None = Field(default=None, validation_alias="APCA_API_KEY_ID")
    alpaca_api_secret_key: SecretStr | None = Field(default=None, validation_alias="APCA_API_SECRET_KEY")
    binance_api_key: SecretStr | None = Field(default=None, validation_alias="BINANCE_API_KEY")
    binance_api_secret: SecretStr | None = Field(default=None, validation_alias="BINANCE_API_SECRET")

    @cached_property
    def home(self) -> Path:
        """LAB_HOME as an absolute path (created on first use); one that cannot be a folder
        (a file, under /proc) is a ConfigError naming it, not a traceback from the first command."""
        path = self.lab_home.expanduser().resolve()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError([f"LAB_HOME {path}: cannot create it as a folder ({exc.strerror})"]) from None
        return path

    @property
    def database_url(self) -> str:
        """LAB_DATABASE_URL, else the embedded SQLite file under LAB_HOME."""
        return self.lab_database_url or f"sqlite:///{self.home / 'lab.db'}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def get_settings() -> Settings:
    """Read settings now (not cached: tests and the CLI change the environment)."""
    return Settings()
