"""The library for collectors and readers: typed records, publishers that check records as the sink does,
and readers of what the sink wrote (docs/client.md)."""

from mds_sink.client.batching import AsyncBatchPublisher, BatchPublisher
from mds_sink.client.delivery import Deliveries, Delivery
from mds_sink.client.errors import (
    NotAcknowledged,
    PermanentPublishError,
    PublishError,
    RecordInvalid,
    RetryablePublishError,
)
from mds_sink.client.publisher import AsyncPublisher, Publisher
from mds_sink.client.reader import AsyncReader, BarRow, LatestPrice, Reader, as_dataframe, as_dicts
from mds_sink.client.records import Bar, Fields, Fundamentals, JobRequest, News, OptionSnapshot, Quote

__all__ = [
    "AsyncBatchPublisher",
    "AsyncPublisher",
    "AsyncReader",
    "Bar",
    "BarRow",
    "BatchPublisher",
    "Deliveries",
    "Delivery",
    "Fields",
    "Fundamentals",
    "JobRequest",
    "LatestPrice",
    "News",
    "NotAcknowledged",
    "OptionSnapshot",
    "PermanentPublishError",
    "PublishError",
    "Publisher",
    "Quote",
    "Reader",
    "RecordInvalid",
    "RetryablePublishError",
    "as_dataframe",
    "as_dicts",
]
