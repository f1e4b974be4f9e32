"""Node configuration: `postroom.toml` parsed once into frozen, typed settings."""

from postroom.config.loader import (
    CONFIG_ENV,
    ConfigError,
    Problem,
    find_config,
    load_settings,
    parse_listen,
    render_config,
)
from postroom.config.settings import (
    DatabaseSettings,
    DnsSettings,
    ListenAddress,
    ListenerSettings,
    PasswordSettings,
    QueueSettings,
    ServiceSettings,
    Settings,
    SmtpLimits,
    TlsSettings,
)

__all__ = [
    "CONFIG_ENV",
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
    "TlsSettings",
    "find_config",
    "load_settings",
    "parse_listen",
    "render_config",
]
