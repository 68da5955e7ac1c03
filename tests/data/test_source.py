"""series_from_dataframe keeps each series' id (IdentifiedSeries)."""

import numpy as np
import pandas as pd
import pytest

from chronos_moe.data import DataError, IdentifiedSeries, InMemorySeries, series_from_dataframe


def test_ids_of_any_hashable_type_stay_with_their_series():
    frame = pd.DataFrame(
        {
            "id": [(1, "x"), 7, (1, "x"), 7, "s"],
            "timestamp": [2, 1, 1, 2, 1],
            "target": [20.0, 1.0, 10.0, 2.0, 5.0],
        }
    )
    series = series_from_dataframe(frame)
    assert isinstance(series, IdentifiedSeries) and isinstance(series, list)
    assert series.ids == [(1, "x"), 7, "s"]
    assert [s.tolist() for s in series] == [[10.0, 20.0], [1.0, 2.0], [5.0]]
    assert InMemorySeries(series).num_series == 3  # still a list of series


def test_a_missing_id_is_named():
    frame = pd.DataFrame({"id": ["a", None], "timestamp": [1, 2], "target": [1.0, 2.0]})
    with pytest.raises(DataError, match="row 1, field 'id': 1 missing series id"):
        series_from_dataframe(frame)


def test_ids_must_match_the_series():
    with pytest.raises(ValueError, match="one id per series. Received: 1 ids for 2 series"):
        IdentifiedSeries([np.ones(2), np.ones(3)], ids=["a"])
