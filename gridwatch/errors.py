"""gridwatch's exceptions. Every error the platform raises on purpose derives from one root::

    GridwatchError
    ├── ConfigError          a site file or setting is wrong (names the file, the path, the problem)
    ├── ServiceError         an embedded service cannot start (missing binary, port clash, timeout)
    ├── PayloadError         a message cannot be accepted; its reason goes to the dead-letter topic
    │   └── UnknownDeviceError
    └── StoreError           the database refused a write after the retries ran out

Third-party errors are translated where they cross into gridwatch and chained with ``from``.
"""


class GridwatchError(Exception):
    """Root of every error gridwatch raises on purpose."""


class ConfigError(GridwatchError):
    """A site file or a setting is invalid."""


class ServiceError(GridwatchError):
    """An embedded service could not be started or reached."""


class PayloadError(GridwatchError):
    """A message is malformed or violates the site's registry; the text is the reason."""


class UnknownDeviceError(PayloadError):
    """A message names a device the site does not know."""


class StoreError(GridwatchError):
    """The database could not take a write, even after retrying."""
