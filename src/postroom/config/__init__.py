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
    PasswordSettings,
    QueueSettings,
    ServiceSettings,
    Settings,
    SmtpLimits,
    SubmissionSettings,
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
    "PasswordSettings",
    "Problem",
    "QueueSettings",
    "ServiceSettings",
    "Settings",
    "SmtpLimits",
    "SubmissionSettings",
    "TlsSettings",
    "config_document",
    "find_config",
    "load_settings",
    "parse_listen",
]
