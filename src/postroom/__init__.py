"""Postroom: a self-hosted, multi-tenant hosted mail flow service.

The package is split into rooms (see ARCHITECTURE.md): `config`, `model`, `storage`, `directory`,
`dns`, `smtp`, `routing`, `queue`, `delivery`, `mailstore`, `trace`, `cli` and the composition root
`app`. Only `app` knows the concrete classes; everything else talks through the services.
"""

__version__ = "0.1.0"
