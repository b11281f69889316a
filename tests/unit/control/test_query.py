from __future__ import annotations

import pytest

from mds_sink.control.query import normalise_symbols
from mds_sink.errors import QueryError


def test_symbols_are_trimmed_and_upper_cased_like_the_sink_stores_them() -> None:
    assert normalise_symbols(" aapl, MSFT ,,brk.b") == ["AAPL", "MSFT", "BRK.B"]
    with pytest.raises(QueryError, match="no symbols"):
        normalise_symbols(" , ")
