"""Tests of `benchmarks/real_data.py` on small fake wheels: nothing is downloaded."""

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from chronos_moe.evaluation.datasets import as_datasets

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "real_data.py"
_spec = importlib.util.spec_from_file_location("real_data", _PATH)
real_data = importlib.util.module_from_spec(_spec)
sys.modules["real_data"] = real_data  # dataclasses resolve the module by name
_spec.loader.exec_module(real_data)

STATSMODELS_WHEEL = "statsmodels-0.15.0-cp311-cp311-manylinux_2_27_x86_64.whl"
AEON_WHEEL = "aeon-1.6.0-py3-none-any.whl"
SM = "statsmodels/datasets/"
AE = "aeon/datasets/data/"


def _column_csv(header: str, index: list, values: np.ndarray) -> str:
    rows = [f"{i},{'' if np.isnan(v) else v}" for i, v in zip(index, values, strict=True)]
    return "\n".join([header, *rows]) + "\n"


def _months(start_year: int, count: int, format_month) -> list[str]:
    return [format_month(start_year + m // 12, m % 12 + 1) for m in range(count)]


MONTH_NAMES = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

TSF = """# Dataset Information
# A fake M1 file.
@relation M1
@attribute series_name string
@attribute start_timestamp date
@frequency yearly
@horizon 6
@missing true
@data
T1:1975-01-01 00-00-00:1,2,3,4,5,6,7,8,9,10,11,12,13
T2:1980-01-01 00-00-00:5,?,7,8,9,10,11,12,13,14,15,16,17,18
T3:1990-01-01 00-00-00:1,2,3,4,5,6,7,8,9,10,11
"""
FERTILITY_YEARS = list(range(1960, 1980))  # 20 years
FERTILITY_ROWS = {  # code -> values (None = missing)
    "AAA": [float(i) for i in range(20)],
    "BBB": [None, None] + [2.0 + i for i in range(15)] + [None, None, None],  # trimmed to 15
    "OED": [1.0] * 20,  # an aggregate: dropped
    "CCC": [None] * 8 + [3.0] * 12,  # 12 points: just enough (6 history + 6 target)
    "DDD": [None] * 9 + [4.0] * 11,  # 11 points: too short, dropped
}
ELNINO = np.arange(48.0).reshape(4, 12) + 100  # years 2000-2003, row = year
CO2 = np.arange(60.0) + 300
CO2[[3, 20, 21]] = np.nan
CO2[-13:] = np.nan  # the last window has no observed value: that origin is dropped


def _statsmodels_files() -> dict[str, str]:
    fertility = ["Country Name,Country Code,Indicator Name,Indicator Code," + ",".join(
        str(y) for y in FERTILITY_YEARS
    )]  # fmt: skip
    for code, values in FERTILITY_ROWS.items():
        cells = ",".join("" if v is None else str(v) for v in values)
        fertility.append(f'Land {code},{code},"Fertility rate, total",SP.DYN.TFRT.IN,{cells}')
    macro_columns = real_data._MACRODATA_COLUMNS
    macro = ['"year","quarter",' + ",".join(f'"{c}"' for c in macro_columns)]
    for t in range(24):
        cells = ",".join(str(1000 * k + t) for k in range(len(macro_columns)))
        macro.append(f"{1959 + t // 4},{t % 4 + 1},{cells}")
    elnino = ['"YEAR",' + ",".join(f'"{m}"' for m in real_data._MONTHS)]
    for year, row in zip(range(2003, 1999, -1), ELNINO[::-1], strict=True):  # file unsorted
        elnino.append(f"{year}," + ",".join(f"{v:.3f}" for v in row))
    elec_dates = _months(1995, 40, lambda y, m: f"{MONTH_NAMES[m - 1]}-1-{y}")
    co2_dates = [f"{19580329 + 7 * i}" for i in range(60)]  # not real dates: only read in order
    return {
        f"{SM}fertility/fertility.csv": "\n".join(fertility) + "\n",
        f"{SM}sunspots/sunspots.csv": _column_csv(
            '"YEAR","SUNACTIVITY"', list(range(1700, 1730)), np.arange(30.0)
        ),
        f"{SM}nile/nile.csv": _column_csv(
            "year,volume", list(range(1871, 1891)), np.arange(20.0) + 1000
        ),
        f"{SM}macrodata/macrodata.csv": "\n".join(macro) + "\n",
        f"{SM}elnino/elnino.csv": "\n".join(elnino) + "\n",
        f"{SM}elec_equip/elec_equip.csv": _column_csv(
            "DATE,STS.M.I7.W.TOVT.NS0016.4.000", elec_dates, np.arange(40.0) + 60
        ),
        f"{SM}co2/co2.csv": _column_csv("date,co2", co2_dates, CO2),
    }


def _aeon_files() -> dict[str, str]:
    uschange = [",Quarter," + ",".join(real_data._USCHANGE_COLUMNS)]
    for t in range(18):
        cells = ",".join(str(0.5 * k + t) for k in range(5))
        uschange.append(f"{t},{1970 + t // 4} Q{t % 4 + 1},{cells}")
    return {
        f"{AE}m1_yearly_dataset/m1_yearly_dataset.tsf": TSF,
        f"{AE}Lynx/Lynx.csv": _column_csv(",0", list(range(1821, 1833)), np.arange(12.0) * 100),
        f"{AE}Uschange/Uschange.csv": "\n".join(uschange) + "\n",
        f"{AE}Airline/Airline.csv": _column_csv(
            "Date,Passengers", _months(1949, 36, lambda y, m: f"{y}-{m:02d}"), np.arange(36.0)
        ),
        f"{AE}ShampooSales/ShampooSales.csv": _column_csv(
            "Time,Sales", _months(1991, 35, lambda y, m: f"{y}-{m:02d}"), np.arange(35.0)
        ),
        f"{AE}PBS_dataset/PBS_dataset.csv": _column_csv(
            "Month,Scripts",
            _months(1991, 50, lambda y, m: f"{y} {MONTH_NAMES[m - 1]}"),
            np.arange(50.0) % 3,
        ),
    }


def _write_wheel(path: Path, files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)


@pytest.fixture
def wheel_dir(tmp_path):
    directory = tmp_path / "wheels"
    directory.mkdir()
    _write_wheel(directory / STATSMODELS_WHEEL, _statsmodels_files())
    _write_wheel(directory / AEON_WHEEL, _aeon_files())
    return directory


@pytest.fixture
def datasets(wheel_dir):
    return {d.name: d for d in real_data.load_real_benchmark(wheel_dir, num_origins=4)}


@pytest.fixture(autouse=True)
def no_pip(monkeypatch):
    """Any attempt to run pip fails the test: the tests never download."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"the tests must not run pip: {args}")

    monkeypatch.setattr(real_data.subprocess, "run", refuse)


def test_datasets_freq_and_horizon(datasets):
    summary = [(d.name, d.freq, d.prediction_length) for d in datasets.values()]
    assert summary == [
        ("m1_yearly", "Y", 6),
        ("fertility_yearly", "Y", 6),
        ("yearly_misc", "Y", 6),
        ("quarterly_macro", "Q", 8),
        ("monthly_misc", "M", 12),
        ("weekly_co2", "W", 13),
    ]
    for dataset in datasets.values():
        assert all(values.dtype == np.float64 for values in dataset.series)
        assert all("==" in line and "`" in line for line in dataset.sources)
    assert len(datasets["monthly_misc"].sources) == 5


def test_parse_tsf_missing_values_and_names():
    series = real_data.parse_tsf(TSF)
    assert list(series) == ["T1", "T2", "T3"]
    assert series["T1"].tolist() == np.arange(1.0, 14.0).tolist()
    assert np.isnan(series["T2"][1]) and series["T2"][[0, 2, -1]].tolist() == [5.0, 7.0, 18.0]
    with pytest.raises(ValueError, match="@data"):
        real_data.parse_tsf("@attribute series_name string\nT1:1,2\n")


def test_m1_yearly_keeps_every_series_with_one_origin(datasets):
    m1 = datasets["m1_yearly"].series
    # min_history(6, 1) = 6: a series needs 6 + 6 points; T3 has 11 and is dropped.
    assert [len(values) for values in m1] == [13, 14]
    np.testing.assert_array_equal(m1[0], np.arange(1.0, 14.0))
    assert np.isnan(m1[1][1]) and np.isnan(m1[1]).sum() == 1


def test_fertility_drops_aggregates_trims_and_drops_short(datasets):
    fertility = datasets["fertility_yearly"].series
    assert len(fertility) == 3  # AAA, BBB, CCC; OED is an aggregate, DDD too short
    np.testing.assert_array_equal(fertility[0], np.arange(20.0))
    np.testing.assert_array_equal(fertility[1], 2.0 + np.arange(15.0))
    np.testing.assert_array_equal(fertility[2], np.full(12, 3.0))


def test_yearly_misc_values_and_origins(datasets):
    series = datasets["yearly_misc"].series
    # sunspots 30 → 30, 24, 18, 12 (history 6 = min_history); Nile 20 → 20, 14;
    # lynx 12 → 12.
    assert [len(values) for values in series] == [30, 24, 18, 12, 20, 14, 12]
    np.testing.assert_array_equal(series[0], np.arange(30.0))
    np.testing.assert_array_equal(series[4], np.arange(20.0) + 1000)
    np.testing.assert_array_equal(series[6], np.arange(12.0) * 100)


def test_quarterly_macro_columns(datasets):
    series = datasets["quarterly_macro"].series
    # min_history(8, 4) = 8. 12 macrodata columns of 24 quarters → 24, 16 (the
    # origin at 8 has no history); 5 Uschange columns of 18 quarters → 18 (10
    # would keep 2 history points).
    assert [len(values) for values in series] == [24, 16] * 12 + [18] * 5
    np.testing.assert_array_equal(series[0], np.arange(24.0))  # realgdp
    np.testing.assert_array_equal(series[2 * 11], 11000 + np.arange(24.0))  # realint
    np.testing.assert_array_equal(series[24], np.arange(18.0))  # Consumption
    np.testing.assert_array_equal(series[-1], 2.0 + np.arange(18.0))  # Unemployment


def test_monthly_misc_flattens_elnino_year_by_year(datasets):
    series = datasets["monthly_misc"].series
    # El Niño 4 years → 48, 36; elec_equip 40 → 40; airline 36 → 36;
    # shampoo 35 → none (23 history points < 24); PBS 50 → 50, 38.
    assert [len(values) for values in series] == [48, 36, 40, 36, 50, 38]
    np.testing.assert_array_equal(series[0], np.arange(48.0) + 100)  # Jan..Dec 2000, 2001, ...
    np.testing.assert_array_equal(series[2], np.arange(40.0) + 60)
    np.testing.assert_array_equal(series[4], np.arange(50.0) % 3)


def test_monthly_csv_with_a_gap_is_an_error(wheel_dir):
    files = _aeon_files()
    lines = files[f"{AE}Airline/Airline.csv"].splitlines()
    files[f"{AE}Airline/Airline.csv"] = "\n".join(lines[:5] + lines[6:]) + "\n"
    _write_wheel(wheel_dir / AEON_WHEEL, files)
    with pytest.raises(ValueError, match="Airline.csv .* monthly"):
        real_data.load_real_benchmark(wheel_dir)


def test_weekly_co2_keeps_missing_values_and_drops_unobserved_targets(datasets):
    series = datasets["weekly_co2"].series
    # 60 weeks, horizon 13, min history 13: origins end at 60 (target all NaN:
    # dropped), 47, 34, and not 21 (8 history points).
    assert [len(values) for values in series] == [47, 34]
    np.testing.assert_array_equal(np.isnan(series[0]), np.isnan(CO2[:47]))
    assert np.isnan(series[0][[3, 20, 21]]).all()
    np.testing.assert_array_equal(series[0][:3], [300.0, 301.0, 302.0])


def test_rolling_origins_windows_do_not_overlap():
    values = np.arange(50.0)
    copies = real_data.rolling_origins([values], 7, num_origins=4, history=10)
    assert [len(c) for c in copies] == [50, 43, 36, 29]
    targets = [c[-7:] for c in copies]
    for later, earlier in zip(targets, targets[1:], strict=False):
        assert earlier[-1] + 1 == later[0]  # adjacent, not overlapping
    # Every copy is a prefix of the series.
    assert all(np.array_equal(c, values[: len(c)]) for c in copies)
    # num_origins caps the copies; a longer min history drops the earliest origins.
    assert len(real_data.rolling_origins([values], 7, num_origins=2, history=10)) == 2
    assert len(real_data.rolling_origins([values], 7, num_origins=4, history=30)) == 2


def test_rolling_origins_drops_unobserved_history():
    values = np.r_[np.full(6, np.nan), np.arange(14.0)]
    copies = real_data.rolling_origins([values], 5, num_origins=4, history=1)
    assert [len(c) for c in copies] == [20, 15]  # the copy ending at 10 has no observed history


def test_num_origins_one_gives_one_copy_per_series(wheel_dir):
    with pytest.warns(UserWarning, match="weekly_co2"):  # its last window is all NaN
        datasets = real_data.load_real_benchmark(wheel_dir, num_origins=1)
    counts = {d.name: len(d.series) for d in datasets}
    # One copy per series: the full series (shampoo is too short for the monthly
    # min history); a dataset left without series is omitted.
    assert counts == {
        "m1_yearly": 2,
        "fertility_yearly": 3,
        "yearly_misc": 3,
        "quarterly_macro": 17,
        "monthly_misc": 4,
    }
    with pytest.raises(ValueError, match="num_origins"):
        real_data.load_real_benchmark(wheel_dir, num_origins=0)


def test_missing_file_names_wheel_and_path(wheel_dir):
    files = _statsmodels_files()
    del files[f"{SM}nile/nile.csv"]
    _write_wheel(wheel_dir / STATSMODELS_WHEEL, files)
    with pytest.raises(FileNotFoundError, match=rf"{STATSMODELS_WHEEL}.*nile/nile\.csv"):
        real_data.load_real_benchmark(wheel_dir)


def test_failed_download_names_wheels_directory_and_pip_message(tmp_path, monkeypatch):
    calls = []

    def failing_pip(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(real_data.subprocess, "run", failing_pip)
    empty = tmp_path / "empty"
    with pytest.raises(RuntimeError) as error:
        real_data.load_real_benchmark(empty)
    message = str(error.value)
    for part in ("statsmodels==0.15.0", "aeon==1.6.0", str(empty), "No matching distribution"):
        assert part in message
    assert "package registry" in message
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"]
    assert "--only-binary=:all:" in calls[0]


def test_download_skipped_when_wheels_are_present(wheel_dir):
    # `no_pip` fails any pip call: finding both wheels must not run it.
    paths = real_data.ensure_wheels(wheel_dir)
    assert paths["aeon"].name == AEON_WHEEL


def test_write_reads_back_through_as_datasets(datasets, tmp_path):
    written = real_data.write_real_benchmark(list(datasets.values()), tmp_path / "out")
    arrow_files = [p for p in written if p.suffix == ".arrow"]
    assert [p.stem for p in arrow_files] == list(datasets)
    for dataset, read in zip(datasets.values(), as_datasets(arrow_files), strict=True):
        assert read.name == dataset.name and read.freq == dataset.freq
        assert len(read.series) == len(dataset.series)
        for expected, actual in zip(dataset.series, read.series, strict=True):
            np.testing.assert_allclose(actual, expected.astype(np.float32))  # NaN compare equal
    sources = (tmp_path / "out" / "sources.md").read_text()
    assert "## monthly_misc" in sources and "statsmodels/datasets/elnino/elnino.csv" in sources
    assert "6 series, horizon 12, freq M, length min 36 / median 39 / max 50" in sources


def test_main_prints_the_table(wheel_dir, tmp_path, capsys):
    real_data.main(["--output-dir", str(tmp_path / "out"), "--wheel-dir", str(wheel_dir)])
    printed = capsys.readouterr().out
    assert "| quarterly_macro | Q | 8 | 29 | 16 | 18 | 24 |" in printed
    assert (tmp_path / "out" / "weekly_co2.arrow").exists()


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(real_data, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
