"""A real-data forecasting benchmark, assembled offline from data files shipped in wheels.

Real series of four frequencies (yearly, quarterly, monthly, weekly) for scoring
models with WQL and MASE relative to Seasonal Naive
(`chronos_moe.evaluation.evaluate`). The series come from the data files that two
pinned packages ship inside their wheels, `statsmodels==0.15.0` (World Bank
fertility, sunspots, Nile, US macro data, El Niño, Eurostat electrical equipment,
Mauna Loa CO2) and `aeon==1.6.0` (the M1 yearly competition in the Monash `.tsf`
format, Box-Jenkins airline, lynx, shampoo, PBS scripts, US change). Why these:

* they are real measurements, not simulations;
* a package registry is all they need: the wheels are downloaded with
  `pip download` (never installed) and read as zip files, so the benchmark builds
  on a machine without any other internet access, byte-identical every time;
* they span several frequencies and horizons (Y 6, Q 8, M 12, W 13);
* chronos-moe trains on its own synthetic generators only, so none of these
  series has been seen in training.

Datasets of a few long series are scored at several forecast origins: each series
gives up to `num_origins` truncated copies whose last `prediction_length` points
are its last, second-last, ... non-overlapping windows (see `rolling_origins`), as
`evaluate` scores the last `prediction_length` points of every series. The M1 and
fertility datasets have many series and use one origin.

Usage (from the repository root):

    python benchmarks/real_data.py --output-dir /tmp/real-bench
    python benchmarks/real_data.py --output-dir DIR --wheel-dir DIR --num-origins 4

Prints one line per dataset (frequency, horizon, series, lengths) and writes one
Arrow file per dataset and `sources.md` (the provenance of every series) to
`--output-dir`. Then, for example:

    chronos-moe evaluate naive DIR/monthly_misc.arrow --prediction-length 12
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

# The pinned wheels, `name -> version`: the data (and the provenance lines below)
# belong to exactly these versions.
WHEELS = {"statsmodels": "0.15.0", "aeon": "1.6.0"}
_STATSMODELS = "statsmodels==0.15.0"
_AEON = "aeon==1.6.0"

# World Bank region and group aggregates in the fertility file: averages of the
# countries, not series of their own.
_FERTILITY_AGGREGATES = frozenset({"CAA", "LCN", "OED", "OSS", "PSS"})
_MACRODATA_COLUMNS = (
    "realgdp",
    "realcons",
    "realinv",
    "realgovt",
    "realdpi",
    "cpi",
    "m1",
    "tbilrate",
    "unemp",
    "pop",
    "infl",
    "realint",
)
_USCHANGE_COLUMNS = ("Consumption", "Income", "Production", "Savings", "Unemployment")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_SEASONALITY = {"Y": 1, "Q": 4, "M": 12, "W": 1}  # as `seasonality_from_freq`

# One provenance line per file: package==version, path in the wheel, and the
# origin and terms as the package states them (statsmodels: TITLE/SOURCE/COPYRIGHT
# of `statsmodels/datasets/<name>/data.py`; aeon: its loader docstrings in
# `aeon/datasets/_single_problem_loaders.py` and the `.tsf` header).
_SM = "statsmodels/datasets/"
_AE = "aeon/datasets/data/"
_PROVENANCE = {
    f"{_AE}m1_yearly_dataset/m1_yearly_dataset.tsf": f"{_AEON} `{_AE}m1_yearly_dataset/"
    "m1_yearly_dataset.tsf`: M1 competition yearly series (Makridakis et al. 1982, J. of "
    "Forecasting 1(2)), Monash forecasting repository .tsf file; aeon BSD-3-Clause",
    f"{_SM}fertility/fertility.csv": f"{_STATSMODELS} `{_SM}fertility/fertility.csv`: World "
    "Bank, fertility rate, total (births per woman), World Development Indicators "
    "SP.DYN.TFRT.IN; 'distributed according to the World Bank terms of use'",
    f"{_SM}sunspots/sunspots.csv": f"{_STATSMODELS} `{_SM}sunspots/sunspots.csv`: yearly "
    "sunspots 1700-2008, NOAA NGDC; 'public domain'",
    f"{_SM}nile/nile.csv": f"{_STATSMODELS} `{_SM}nile/nile.csv`: Nile river flows at Aswan "
    "1871-1970 (Cobb 1978, Biometrika 65.2); 'public domain'",
    f"{_AE}Lynx/Lynx.csv": f"{_AEON} `{_AE}Lynx/Lynx.csv`: annual Canadian lynx trappings "
    "1821-1934 (Becker, Chambers and Wilks 1988, The New S Language); aeon BSD-3-Clause",
    f"{_SM}macrodata/macrodata.csv": f"{_STATSMODELS} `{_SM}macrodata/macrodata.csv`: US "
    "macroeconomic data 1959Q1-2009Q3, FRED (St. Louis Fed) and BLS; 'public domain'",
    f"{_AE}Uschange/Uschange.csv": f"{_AEON} `{_AE}Uschange/Uschange.csv`: US quarterly "
    "percentage changes 1970Q1-2016Q3, data of 'Forecasting: Principles and Practice' "
    "(2nd ed.); aeon BSD-3-Clause",
    f"{_SM}elnino/elnino.csv": f"{_STATSMODELS} `{_SM}elnino/elnino.csv`: El Niño sea "
    "surface temperatures 1950-2010, NOAA NWS ERSST.V3B Niño 1+2; 'public domain'",
    f"{_SM}elec_equip/elec_equip.csv": f"{_STATSMODELS} `{_SM}elec_equip/elec_equip.csv`: "
    "euro area turnover index, manufacture of electrical equipment 1995-2016, Eurostat; "
    "'public domain'",
    f"{_AE}Airline/Airline.csv": f"{_AEON} `{_AE}Airline/Airline.csv`: international airline "
    "passengers 1949-1960 (Box, Jenkins and Reinsel 1976, series G); aeon BSD-3-Clause",
    f"{_AE}ShampooSales/ShampooSales.csv": f"{_AEON} `{_AE}ShampooSales/ShampooSales.csv`: "
    "monthly shampoo sales over 3 years (Makridakis, Wheelwright and Hyndman 1998); aeon "
    "BSD-3-Clause",
    f"{_AE}PBS_dataset/PBS_dataset.csv": f"{_AEON} `{_AE}PBS_dataset/PBS_dataset.csv`: "
    "Australian Pharmaceutical Benefits Scheme scripts 1991-2008, data of 'Forecasting: "
    "Principles and Practice' (3rd ed.); aeon BSD-3-Clause",
    f"{_SM}co2/co2.csv": f"{_STATSMODELS} `{_SM}co2/co2.csv`: Mauna Loa weekly atmospheric "
    "CO2 1958-2001 (Keeling and Whorf 2004, CDIAC); 'public domain'",
}


@dataclasses.dataclass(frozen=True)
class RealDataset:
    """One dataset of the real-data benchmark.

    Attributes:
        name: str. The dataset's name, also its Arrow file's stem.
        series: list of float64 1-D arrays; NaN marks missing values. With
            rolling origins, each truncated copy is one series.
        freq: str. Pandas frequency: `"Y"`, `"Q"`, `"M"` or `"W"`.
        prediction_length: int. The horizon to score: the last
            `prediction_length` points of every series.
        sources: one provenance line per source file.

    Example:

    >>> dataset = RealDataset("toy", [np.arange(10.0)], "Y", 2, ("made up",))
    >>> dataset.series[0][-dataset.prediction_length :].tolist()
    [8.0, 9.0]
    """

    name: str
    series: list[np.ndarray]
    freq: str
    prediction_length: int
    sources: tuple[str, ...]


# ---- parsing ----------------------------------------------------------------------------


def parse_tsf(text: str) -> dict[str, np.ndarray]:
    """Reads the series of a Monash `.tsf` file: `name -> float64 values` (`?` → NaN).

    The header declares the attributes (`@attribute name type`) that precede the
    values on each line after `@data`, separated by `:`; the values are
    comma-separated. Comment lines start with `#`.

    Example:

    >>> text = "@attribute series_name string\\n@data\\nT1:1,?,3\\n"
    >>> parse_tsf(text)["T1"].tolist()
    [1.0, nan, 3.0]
    """
    attributes, series, in_data = [], {}, False
    for line_number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower().startswith("@attribute"):
                attributes.append(line.split()[1])
            elif line.lower() == "@data":
                in_data = True
            continue
        fields = line.split(":", len(attributes))
        if len(fields) != len(attributes) + 1 or "series_name" not in attributes:
            raise ValueError(
                f"A .tsf data line must hold the attributes {attributes} and the values, "
                f"separated by ':'. Received at line {line_number}: {line[:80]!r}"
            )
        name = fields[attributes.index("series_name")]
        series[name] = np.array(
            [np.nan if v == "?" else float(v) for v in fields[-1].split(",")], dtype=np.float64
        )
    if not in_data:
        raise ValueError("A .tsf file must have a `@data` line. Received: none")
    return series


def trim_missing(values: np.ndarray) -> np.ndarray:
    """Drops the leading and trailing NaN of a series (an all-NaN series becomes empty).

    Example:

    >>> trim_missing(np.array([np.nan, 1.0, np.nan, 2.0, np.nan])).tolist()
    [1.0, nan, 2.0]
    """
    observed = np.flatnonzero(~np.isnan(values))
    return values[observed[0] : observed[-1] + 1] if observed.size else values[:0]


# ---- rolling origins --------------------------------------------------------------------


def min_history(prediction_length: int, seasonality: int) -> int:
    """The fewest history points a scored series keeps: `max(h, 2 * seasonality)`.

    One horizon of history (the M1 competition's shortest yearly series, 15
    points with horizon 6, keeps 9), and two full seasons, so that Seasonal Naive
    repeats a real season and MASE's seasonal scale has at least one difference
    per position of the season.

    Example:

    >>> min_history(6, 1), min_history(8, 4), min_history(12, 12)
    (6, 8, 24)
    """
    return max(prediction_length, 2 * seasonality)


def rolling_origins(
    series: Sequence[np.ndarray], prediction_length: int, num_origins: int, history: int
) -> list[np.ndarray]:
    """Truncated copies of each series, one per forecast origin.

    Copy `k` (0-based) of a series of length `T` is `values[: T - k * h]`: its last
    `h = prediction_length` points are the series' `(k + 1)`-th last window, so
    the windows of one series do not overlap. A series gives at most
    `num_origins` copies; origins whose history (`T - (k + 1) * h` points) is
    shorter than `history` are dropped, and so are copies without an observed
    value in their history or in their last `h` points. Copies come series by
    series, latest origin first.

    Example:

    >>> copies = rolling_origins([np.arange(10.0)], 3, num_origins=4, history=1)
    >>> [len(c) for c in copies]
    [10, 7, 4]
    """
    copies = []
    for values in series:
        for origin in range(num_origins):
            end = len(values) - origin * prediction_length
            if end - prediction_length < history:
                break
            copy = values[:end]
            if (
                np.isnan(copy[-prediction_length:]).all()
                or np.isnan(copy[:-prediction_length]).all()
            ):
                continue
            copies.append(copy)
    return copies


# ---- wheels -----------------------------------------------------------------------------


def default_wheel_dir() -> Path:
    """`$XDG_CACHE_HOME/chronos-moe/wheels`, or `~/.cache/chronos-moe/wheels`.

    Example:

    >>> default_wheel_dir().parts[-2:]
    ('chronos-moe', 'wheels')
    """
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "chronos-moe" / "wheels"


def _find_wheel(wheel_dir: Path, name: str) -> Path | None:
    found = sorted(wheel_dir.glob(f"{name}-{WHEELS[name]}-*.whl"))
    return found[0] if found else None


def ensure_wheels(wheel_dir: str | os.PathLike) -> dict[str, Path]:
    """Finds the pinned wheels in `wheel_dir`, downloading the missing ones with pip.

    `pip download --no-deps --only-binary=:all:` needs the package registry; the
    wheels are not installed.

    Returns:
        `package name -> wheel path`.

    Raises:
        RuntimeError: pip failed (its message is included).
    """
    wheel_dir = Path(wheel_dir)
    missing = [name for name in WHEELS if _find_wheel(wheel_dir, name) is None]
    if missing:
        requirements = [f"{name}=={WHEELS[name]}" for name in missing]
        wheel_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        completed = subprocess.run(
            [*command, *requirements, "-d", os.fspath(wheel_dir)],
            capture_output=True,
            text=True,
        )
        still_missing = [name for name in missing if _find_wheel(wheel_dir, name) is None]
        if completed.returncode != 0 or still_missing:
            message = (completed.stderr or completed.stdout).strip()[-2000:]
            raise RuntimeError(
                f"Could not download the wheels {', '.join(requirements)} into {wheel_dir} "
                "(`pip download` needs the package registry; or put the wheel files there "
                f"yourself). pip exited with {completed.returncode}: {message}"
            )
    return {name: _find_wheel(wheel_dir, name) for name in WHEELS}


class _Wheel:
    """Reads data files from a wheel, naming the wheel and path when one is missing."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path)

    def text(self, member: str) -> str:
        try:
            return self.zip.read(member).decode("utf-8")
        except KeyError:
            raise FileNotFoundError(
                f"The wheel {self.path.name} has no file {member!r} (wheel at {self.path})."
            ) from None

    def csv(self, member: str, **options) -> pd.DataFrame:
        return pd.read_csv(io.StringIO(self.text(member)), **options)


# ---- datasets ---------------------------------------------------------------------------


_M1_FILE = f"{_AE}m1_yearly_dataset/m1_yearly_dataset.tsf"
_FERTILITY_FILE = f"{_SM}fertility/fertility.csv"


def _m1_yearly(aeon: _Wheel) -> list[np.ndarray]:
    series = parse_tsf(aeon.text(_M1_FILE))
    return [trim_missing(values) for values in series.values()]


def _fertility(statsmodels: _Wheel) -> list[np.ndarray]:
    table = statsmodels.csv(_FERTILITY_FILE)
    table = table[~table["Country Code"].isin(_FERTILITY_AGGREGATES)]
    years = [column for column in table.columns if column.isdigit()]
    return [trim_missing(row) for row in table[years].to_numpy(np.float64)]


def _sunspots(statsmodels: _Wheel) -> list[np.ndarray]:
    return [statsmodels.csv(f"{_SM}sunspots/sunspots.csv")["SUNACTIVITY"].to_numpy(np.float64)]


def _nile(statsmodels: _Wheel) -> list[np.ndarray]:
    return [statsmodels.csv(f"{_SM}nile/nile.csv")["volume"].to_numpy(np.float64)]


def _lynx(aeon: _Wheel) -> list[np.ndarray]:
    table = aeon.csv(f"{_AE}Lynx/Lynx.csv", index_col=0)  # columns: year (index), count
    return [table.iloc[:, 0].to_numpy(np.float64)]


def _macrodata(statsmodels: _Wheel) -> list[np.ndarray]:
    table = statsmodels.csv(f"{_SM}macrodata/macrodata.csv")
    return [table[column].to_numpy(np.float64) for column in _MACRODATA_COLUMNS]


def _uschange(aeon: _Wheel) -> list[np.ndarray]:
    table = aeon.csv(f"{_AE}Uschange/Uschange.csv")
    return [table[column].to_numpy(np.float64) for column in _USCHANGE_COLUMNS]


def _elnino(statsmodels: _Wheel) -> list[np.ndarray]:
    table = statsmodels.csv(f"{_SM}elnino/elnino.csv").sort_values("YEAR")
    # (years, 12) read row by row: January to December of each year in turn.
    return [table[list(_MONTHS)].to_numpy(np.float64).reshape(-1)]


def _monthly_csv(wheel: _Wheel, member: str, date_format: str) -> list[np.ndarray]:
    """The value column of a two-column monthly CSV, after checking the dates are monthly."""
    table = wheel.csv(member)
    dates = pd.to_datetime(table.iloc[:, 0], format=date_format)
    months = dates.dt.year * 12 + dates.dt.month
    if not (np.diff(months) == 1).all():
        raise ValueError(f"{member} of {wheel.path.name} is not a gapless monthly series.")
    return [table.iloc[:, 1].to_numpy(np.float64)]


def _co2(statsmodels: _Wheel) -> list[np.ndarray]:
    table = statsmodels.csv(f"{_SM}co2/co2.csv")  # weekly; empty cells are missing weeks
    return [table["co2"].to_numpy(np.float64)]


def load_real_benchmark(
    wheel_dir: str | os.PathLike | None = None, num_origins: int = 4
) -> list[RealDataset]:
    """Builds the real-data benchmark from the statsmodels and aeon wheels.

    Datasets (freq, horizon): `m1_yearly` (Y, 6) and `fertility_yearly` (Y, 6),
    one origin each; `yearly_misc` (Y, 6: sunspots, Nile, lynx),
    `quarterly_macro` (Q, 8: US macro data, US change), `monthly_misc` (M, 12:
    El Niño, electrical equipment, airline, shampoo, PBS) and `weekly_co2` (W, 13),
    each scored at up to `num_origins` origins (`rolling_origins`). Every scored
    series keeps `min_history(horizon, seasonality)` history points; a dataset
    left without series is left out, with a warning.

    Args:
        wheel_dir: where the wheels are, or are downloaded to. Defaults to
            `default_wheel_dir()`.
        num_origins: int >= 1. Forecast origins per series of the datasets of few
            series. Defaults to 4.

    Returns:
        list of `RealDataset`.

    Raises:
        RuntimeError: a wheel is missing and cannot be downloaded.
        FileNotFoundError: a wheel lacks an expected data file.

    Example (downloads the wheels once, about 12 MB):

    >>> datasets = load_real_benchmark()  # doctest: +SKIP
    >>> [(d.name, d.freq, d.prediction_length) for d in datasets][:2]  # doctest: +SKIP
    [('m1_yearly', 'Y', 6), ('fertility_yearly', 'Y', 6)]
    """
    if isinstance(num_origins, bool) or not isinstance(num_origins, int) or num_origins < 1:
        raise ValueError(f"`num_origins` must be an int >= 1. Received: num_origins={num_origins}")
    paths = ensure_wheels(default_wheel_dir() if wheel_dir is None else wheel_dir)
    statsmodels, aeon = _Wheel(paths["statsmodels"]), _Wheel(paths["aeon"])
    elnino = _elnino(statsmodels)
    monthly = [
        (statsmodels, f"{_SM}elec_equip/elec_equip.csv", "%b-%d-%Y"),
        (aeon, f"{_AE}Airline/Airline.csv", "%Y-%m"),
        (aeon, f"{_AE}ShampooSales/ShampooSales.csv", "%Y-%m"),
        (aeon, f"{_AE}PBS_dataset/PBS_dataset.csv", "%Y %b"),
    ]
    yearly_misc = [
        (f"{_SM}sunspots/sunspots.csv", _sunspots(statsmodels)),
        (f"{_SM}nile/nile.csv", _nile(statsmodels)),
        (f"{_AE}Lynx/Lynx.csv", _lynx(aeon)),
    ]
    quarterly_macro = [
        (f"{_SM}macrodata/macrodata.csv", _macrodata(statsmodels)),
        (f"{_AE}Uschange/Uschange.csv", _uschange(aeon)),
    ]
    monthly_misc = [(f"{_SM}elnino/elnino.csv", elnino)] + [
        (member, _monthly_csv(wheel, member, date_format)) for wheel, member, date_format in monthly
    ]
    # name, freq, horizon, origins, [(file in the wheel, its series)]
    plan = [
        ("m1_yearly", "Y", 6, 1, [(_M1_FILE, _m1_yearly(aeon))]),
        ("fertility_yearly", "Y", 6, 1, [(_FERTILITY_FILE, _fertility(statsmodels))]),
        ("yearly_misc", "Y", 6, num_origins, yearly_misc),
        ("quarterly_macro", "Q", 8, num_origins, quarterly_macro),
        ("monthly_misc", "M", 12, num_origins, monthly_misc),
        ("weekly_co2", "W", 13, num_origins, [(f"{_SM}co2/co2.csv", _co2(statsmodels))]),
    ]
    datasets = []
    for name, freq, horizon, origins, parts in plan:
        history = min_history(horizon, _SEASONALITY[freq])
        series = [
            copy for _, part in parts for copy in rolling_origins(part, horizon, origins, history)
        ]
        if not series:
            warnings.warn(
                f"Dataset {name!r} has no series left with horizon {horizon}, {origins} "
                f"origin(s) and a history of at least {history} points: it is left out.",
                stacklevel=2,
            )
            continue
        sources = tuple(_PROVENANCE[member] for member, _ in parts)
        datasets.append(RealDataset(name, series, freq, horizon, sources))
    return datasets


# ---- output -----------------------------------------------------------------------------


def _lengths(dataset: RealDataset) -> tuple[int, int, int]:
    lengths = [len(values) for values in dataset.series]
    return min(lengths), int(np.median(lengths)), max(lengths)


def write_real_benchmark(
    datasets: Sequence[RealDataset], output_dir: str | os.PathLike
) -> list[Path]:
    """Writes one Arrow file per dataset (`<name>.arrow`, with its freq) and `sources.md`.

    Returns:
        The paths written: the Arrow files in the order of `datasets`, then
        `sources.md`.

    Example:

    >>> import tempfile
    >>> dataset = RealDataset("toy", [np.arange(10.0)], "Y", 2, ("made up",))
    >>> [p.name for p in write_real_benchmark([dataset], tempfile.mkdtemp())]
    ['toy.arrow', 'sources.md']
    """
    from chronos_moe.data import write_arrow

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_arrow(d.series, output_dir / f"{d.name}.arrow", freq=d.freq) for d in datasets]
    lines = [
        "# Real-data benchmark: sources",
        "",
        "Built by `benchmarks/real_data.py` from the data files in the wheels "
        + ", ".join(f"{name}=={version}" for name, version in WHEELS.items())
        + ". With rolling origins, each truncated copy of a series counts as one series.",
    ]
    for d in datasets:
        shortest, median, longest = _lengths(d)
        lines += [
            "",
            f"## {d.name}",
            "",
            f"{len(d.series)} series, horizon {d.prediction_length}, freq {d.freq}, "
            f"length min {shortest} / median {median} / max {longest}.",
            "",
            *(f"- {source}" for source in d.sources),
        ]
    sources = output_dir / "sources.md"
    sources.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [*paths, sources]


def format_table(datasets: Sequence[RealDataset]) -> str:
    """A Markdown table: dataset, freq, horizon, series, min/median/max length.

    Example:

    >>> print(format_table([RealDataset("toy", [np.arange(10.0)], "Y", 2, ())]).splitlines()[-1])
    | toy | Y | 2 | 1 | 10 | 10 | 10 |
    """
    rows = [
        "| dataset | freq | horizon | series | min length | median length | max length |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for d in datasets:
        lengths = " | ".join(str(n) for n in _lengths(d))
        rows.append(
            f"| {d.name} | {d.freq} | {d.prediction_length} | {len(d.series)} | " + lengths + " |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", required=True, type=Path, help="where to write")
    parser.add_argument(
        "--wheel-dir",
        type=Path,
        default=None,
        help="where the statsmodels and aeon wheels are, or go (default: the user cache)",
    )
    parser.add_argument(
        "--num-origins", type=int, default=4, help="origins per series of the small datasets"
    )
    args = parser.parse_args(argv)
    datasets = load_real_benchmark(args.wheel_dir, num_origins=args.num_origins)
    print(format_table(datasets))
    paths = write_real_benchmark(datasets, args.output_dir)
    print(f"wrote {len(paths)} files to {args.output_dir}")
    return paths


if __name__ == "__main__":
    main()
