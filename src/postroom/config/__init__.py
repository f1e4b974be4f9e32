"""Node configuration: `postroom.toml` parsed once into frozen, typed settings."""

from postroom.config.loader import (
    CONFIG_ENV,
    ConfigError,
    Problem,
    config_document,
    find_config,
    load_settings,
    parse_listen,
)
from postroom.config.settings import (
    AdminLimits,
    AdminSettings,
    DatabaseSettings,
    DnsSettings,
    ListenAddress,
    ListenerSettings,
    MtaStsSettings,
    PasswordSettings,
    QueueSettings,
    ServiceSettings,
    Settings,
    SmtpLimits,
    TlsSettings,
)

__all__ = [
    "CONFIG_ENV",
    "AdminLimits",
    "AdminSettings",
    "ConfigError",
    "DatabaseSettings",
    "DnsSettings",
    "ListenAddress",
    "ListenerSettings",
    "MtaStsSettings",
    "PasswordSettings",
    "Problem",
    "QueueSettings",
    "ServiceSettings",
    "Settings",
    "SmtpLimits",
    "TlsSettings",
    "config_document",
    "find_config",
    "load_settings",
    "parse_listen",
]
