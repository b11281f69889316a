"""mds-sink: drains market-data topics from Kafka into PostgreSQL/TimescaleDB under tenant isolation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mds-sink")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
