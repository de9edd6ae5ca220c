"""Profiling on Dask and Spark: the same numbers as ``why.log`` on pandas, published and shown by the observatory.

One Dask ``LocalCluster`` (2 worker processes on 127.0.0.1) and one Spark ``local[2]`` session
serve the whole module; both are stopped by their fixtures. Both profile the same parquet
directory; the reference is ``why.log`` on the same rows read with pandas.
"""

import os

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")  # before anything imports whylogs

import html  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402
import whylogs as why  # noqa: E402
from paths import REPO_ROOT  # noqa: E402
from whylogs.api.logger.result_set import SegmentedResultSet  # noqa: E402

import whylogs_songbird  # noqa: E402,F401  (registers the writer)
from whylogs_songbird.engines import EngineUnavailableError, profile_path, resolve_source  # noqa: E402
from whylogs_songbird.errors import ConfigError, ProfileError  # noqa: E402

dask_dataframe = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")
pyspark_sql = pytest.importorskip("pyspark.sql")

from whylogs_songbird.engines.dask import profile_dask  # noqa: E402
from whylogs_songbird.engines.spark import profile_spark  # noqa: E402

N_ROWS = 100_000
STATS = ["counts/n", "counts/null", "distribution/mean", "distribution/min", "distribution/max"]
NUMERIC = ["id", "amount", "score", "clicks"]
TS = 1_717_200_000_000  # 2024-06-01 00:00 UTC
TIMEOUT = 60


def make_frame(n=N_ROWS, seed=12):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "id": np.arange(n, dtype="int64"),
            "amount": np.where(rng.random(n) < 0.05, np.nan, rng.lognormal(3, 1, n)),
            "score": rng.normal(0.5, 0.2, n),
            "clicks": rng.poisson(3, n).astype("int64"),
            "region": rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1]),
            "plan": np.where(rng.random(n) < 0.03, None, rng.choice(["free", "pro"], n)),
        }
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The frame, written as a parquet directory of 4 files, and as 2 CSV files."""
    root = tmp_path_factory.mktemp("distributed-data")
    frame = make_frame()
    parquet_dir = root / "parquet"
    parquet_dir.mkdir()
    for i, part in enumerate(np.array_split(frame, 4)):
        part.to_parquet(parquet_dir / f"part-{i}.parquet", index=False)
    (parquet_dir / "_SUCCESS").write_text("")  # what Spark leaves: not data
    csv_dir = root / "csv"
    csv_dir.mkdir()
    small = frame.head(5_000)
    small.iloc[:2500].to_csv(csv_dir / "a.csv", index=False)
    small.iloc[2500:].to_csv(csv_dir / "b.csv", index=False)
    return {"frame": pd.read_parquet(parquet_dir), "parquet": parquet_dir, "csv": csv_dir, "small": small}


@pytest.fixture(scope="module")
def dask_client():
    """One local Dask cluster (2 worker processes, loopback, no dashboard) for the module."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def spark():
    """One Spark ``local[2]`` session for the module, bound to 127.0.0.1."""
    from whylogs_songbird.engines.spark import use_this_python

    use_this_python()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    session = (
        pyspark_sql.SparkSession.builder.master("local[2]")
        .appName("songbird-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "50000")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture
def opts(server, tmp_path):
    return {"endpoint": server.url, "config_dir": str(tmp_path / "config")}


def stats(view):
    return view.to_pandas()[STATS]


def assert_same_numbers(view, frame):
    """count, null count, min, max and mean of every column equal ``why.log`` on the pandas frame."""
    got, want = stats(view), stats(why.log(frame).view())
    assert sorted(got.index) == sorted(frame.columns)
    for column in frame.columns:
        for stat in STATS:
            a, b = got.loc[column, stat], want.loc[column, stat]
            if isinstance(b, float) and math.isnan(b):
                assert a is None or math.isnan(a), (column, stat, a)
            else:
                assert a == pytest.approx(b, rel=1e-9), (column, stat, a, b)
    assert got.loc["id", "counts/n"] == len(frame)
    assert got.loc["amount", "counts/null"] == frame["amount"].isna().sum() > 0


def segment_counts(results):
    assert isinstance(results, SegmentedResultSet)
    return {seg.key[0]: results.view(seg).get_column("id").get_metric("counts").n.value for seg in results.segments()}


# -- reading the observatory -----------------------------------------------------------------


def page(url):
    r = requests.get(url, timeout=TIMEOUT)
    assert r.status_code == 200, url
    return r.text


def header_value(text, field):
    """A field of the page's (first) profile header: its data-value, else its text."""
    element = re.search(r'<(dd|span)(\b[^>]*\bdata-field="' + field + r'"[^>]*)>(.*?)</\1>', text, re.S)
    assert element, f"no {field} in the page header"
    value = re.search(r'data-value="([^"]*)"', element.group(2))
    if value:
        return html.unescape(value.group(1))
    return html.unescape(re.sub(r"<[^>]+>", "", element.group(3))).strip()


def shown_stat(text, column, stat):
    """The data-value of one statistic of one column's card (profile 1)."""
    card = re.search(
        r'<article class="column-card" id="col-\d+" data-column="' + re.escape(column) + r'".*?</article>', text, re.S
    )
    assert card, f"no card for {column}"
    row = re.search(r'<tr data-stat="' + stat + r'"[^>]*>(.*?)</tr>', card.group(0), re.S)
    assert row, f"no {stat} row for {column}"
    cell = re.search(r'<td data-profile="1" data-value="([^"]*)"', row.group(1))
    assert cell, f"no value of {stat} for {column}"
    return html.unescape(cell.group(1))


def assert_page_shows(url, frame):
    """The page of ``url`` shows the frame's rows, and each numeric column's count, nulls, min, max and mean."""
    text = page(url)
    assert header_value(text, "rows") == str(len(frame))
    want = stats(why.log(frame).view())
    for column in NUMERIC:
        assert float(shown_stat(text, column, "count")) == len(frame)
        assert float(shown_stat(text, column, "null_count")) == want.loc[column, "counts/null"]
        for stat, key in (("mean", "distribution/mean"), ("min", "distribution/min"), ("max", "distribution/max")):
            assert float(shown_stat(text, column, stat)) == pytest.approx(want.loc[column, key], rel=1e-6), (
                column,
                stat,
            )
    return text


# -- Dask ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_results(data, dask_client):
    """The parquet directory profiled once whole (with a timestamp and progress) and once by region."""
    ddf = dask_dataframe.read_parquet(str(data["parquet"]))
    seen = []
    whole = profile_dask(ddf, dataset_timestamp=TS, progress=lambda *args: seen.append(args))
    segmented = profile_dask(ddf, segment_by="region", dataset_timestamp=TS)
    return {"whole": whole, "segmented": segmented, "progress": seen, "npartitions": ddf.npartitions}


def test_dask_profile_has_pandas_numbers(data, dask_results):
    results, parts = dask_results["whole"], dask_results["npartitions"]
    assert parts >= 4
    assert_same_numbers(results.view(), data["frame"])
    assert results.view().dataset_timestamp == datetime.fromtimestamp(TS / 1000, tz=timezone.utc)
    seen = dask_results["progress"]
    assert seen[0] == (0, parts, "partitions") and seen[-1] == (parts, parts, "partitions")


def test_dask_merges_many_partitions_in_a_tree(data, dask_client):
    # 30 partitions, merged 3 at a time: four levels of merge tasks on the workers
    frame = data["frame"].iloc[:20_000]
    ddf = dask_dataframe.from_pandas(frame, npartitions=30)
    assert_same_numbers(profile_dask(ddf, split_every=3).view(), frame)


def test_dask_segments_count_like_value_counts(data, dask_results):
    assert segment_counts(dask_results["segmented"]) == data["frame"]["region"].value_counts().to_dict()


def test_dask_without_a_client_runs_in_process(data):
    # a fresh process: no distributed client there, Dask's default scheduler does the work
    script = textwrap.dedent(
        """
        import sys, pandas as pd, dask.dataframe as dd
        from whylogs_songbird.engines.dask import profile_dask
        frame = pd.DataFrame({"x": range(1000), "g": ["a", "b"] * 500})
        seen = []
        view = profile_dask(dd.from_pandas(frame, npartitions=5), progress=lambda *a: seen.append(a)).view()
        assert view.get_column("x").get_metric("counts").n.value == 1000, view
        assert seen[-1] == (5, 5, "partitions"), seen
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_dask_published_reference_opens_with_its_numbers(data, dask_results, opts):
    ok, url = dask_results["whole"].writer("songbird").option(reference_profile_name="train", **opts).write()
    assert ok is True, url
    text = assert_page_shows(url, data["frame"])
    assert header_value(text, "kind") == "reference" and header_value(text, "alias") == "train"


def test_dask_segmented_reference_is_published_segment_by_segment(data, dask_results, opts):
    ok, pairs = dask_results["segmented"].writer("songbird").option(reference_profile_name="train", **opts).write()
    assert ok is True and len(pairs) == 4
    counts = data["frame"]["region"].value_counts()
    shown = {}
    for flag, url in pairs:
        assert flag
        text = page(url)
        region = re.fullmatch(r"train\[region=(\w+)\]", header_value(text, "alias")).group(1)
        shown[region] = int(header_value(text, "rows"))
    assert shown == counts.to_dict()


def test_dask_bad_input_is_refused_before_any_work(data, dask_client):
    ddf = dask_dataframe.read_parquet(str(data["parquet"]))
    with pytest.raises(ConfigError, match="cannot segment on 'nope': no such column"):
        profile_dask(ddf, segment_by="nope")
    with pytest.raises(ConfigError, match="takes a dask DataFrame"):
        profile_dask(data["frame"])
    with pytest.raises(ConfigError, match="epoch milliseconds"):
        profile_dask(ddf, dataset_timestamp=1_717_200_000)


# -- Spark -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark_results(data, spark):
    """The parquet directory profiled once whole (with a timestamp and progress) and once by region."""
    sdf = spark.read.parquet(str(data["parquet"]))
    seen = []
    whole = profile_spark(sdf, dataset_timestamp=TS, progress=lambda *args: seen.append(args))
    segmented = profile_spark(sdf, segment_by="region", dataset_timestamp=TS)
    return {"whole": whole, "segmented": segmented, "progress": seen}


def test_spark_profile_has_pandas_numbers(data, spark_results):
    results = spark_results["whole"]
    assert_same_numbers(results.view(), data["frame"])
    assert results.view().dataset_timestamp == datetime.fromtimestamp(TS / 1000, tz=timezone.utc)
    assert all(unit == "tasks" and done <= total for done, total, unit in spark_results["progress"])


def test_spark_segmented_reference_counts_like_value_counts_and_opens(data, spark_results, opts):
    results = spark_results["segmented"]
    counts = data["frame"]["region"].value_counts()
    assert segment_counts(results) == counts.to_dict()
    ok, pairs = results.writer("songbird").option(reference_profile_name="train", **opts).write()
    assert ok is True and len(pairs) == 4
    regions = []
    for _, url in pairs:
        region = re.fullmatch(r"train\[region=(\w+)\]", header_value(page(url), "alias")).group(1)
        assert_page_shows(url, data["frame"][data["frame"]["region"] == region])
        regions.append(region)
    assert sorted(regions) == sorted(counts.index)


def test_spark_published_batch_opens_with_its_numbers(data, spark_results, opts):
    ok, url = spark_results["whole"].writer("songbird").option(**opts).write()
    assert ok is True, url
    text = assert_page_shows(url, data["frame"])
    assert header_value(text, "timestamp") == str(TS)


def test_spark_bad_input_is_refused(data, spark):
    with pytest.raises(ConfigError, match="takes a pyspark.sql.DataFrame"):
        profile_spark(data["frame"])
    with pytest.raises(ConfigError, match="cannot segment on 'nope'"):
        profile_spark(spark.read.parquet(str(data["parquet"])), segment_by="nope")


# -- files: profile_path ----------------------------------------------------------------------


def test_profile_path_on_a_parquet_directory(data):
    seen = []
    results = profile_path(data["parquet"], progress=lambda *args: seen.append(args))
    assert_same_numbers(results.view(), data["frame"])
    assert seen[-1] == (N_ROWS, N_ROWS, "rows")


@pytest.mark.parametrize("engine", ["pandas", "dask", "spark"])
def test_profile_path_on_a_small_parquet_directory_with_each_engine(data, engine, request, tmp_path):
    if engine != "pandas":  # the engine runs on the module's cluster / session
        request.getfixturevalue({"dask": "dask_client", "spark": "spark"}[engine])
    small = data["small"]
    for i, part in enumerate(np.array_split(small, 3)):
        part.to_parquet(tmp_path / f"part-{i}.parquet", index=False)
    seen = []
    results = profile_path(tmp_path, engine=engine, segment_by="plan", progress=lambda *args: seen.append(args))
    assert segment_counts(results) == small["plan"].value_counts().to_dict()
    assert seen or engine == "spark"  # Spark's tasks may finish between two looks at them


def test_profile_path_pandas_streams_batches(data, monkeypatch):
    from whylogs_songbird import engines

    monkeypatch.setattr(engines, "PANDAS_BATCH_ROWS", 7_000)
    seen = []
    results = profile_path(data["parquet"], segment_by="region", progress=lambda *args: seen.append(args))
    assert segment_counts(results) == data["frame"]["region"].value_counts().to_dict()
    assert seen[0] == (0, N_ROWS, "rows") and seen[-1] == (N_ROWS, N_ROWS, "rows") and len(seen) > 15


@pytest.mark.parametrize("engine", ["pandas", "dask"])
def test_profile_path_on_a_csv_glob(data, engine, request):
    if engine == "dask":
        request.getfixturevalue("dask_client")
    results = profile_path(str(data["csv"] / "*.csv"), engine=engine)
    view = results.view()
    small = data["small"]
    for column in NUMERIC:
        assert view.get_column(column).get_metric("counts").n.value == len(small)
    assert view.get_column("amount").get_metric("counts").null.value == small["amount"].isna().sum()
    assert view.get_column("score").get_metric("distribution").mean.value == pytest.approx(small["score"].mean())


def test_resolve_source_says_what_is_wrong(tmp_path):
    with pytest.raises(ProfileError, match="no such file or directory"):
        resolve_source(tmp_path / "missing")
    with pytest.raises(ProfileError, match="no file matches"):
        resolve_source(str(tmp_path / "*.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProfileError, match="is a directory with no .parquet files"):
        resolve_source(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ProfileError, match="reads .parquet, .pq, .csv and .tsv"):
        resolve_source(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="unknown engine 'ray'"):
        profile_path(tmp_path, engine="ray")


# -- installs without the extras -------------------------------------------------------------

WITHOUT = textwrap.dedent(
    """
    import sys
    import whylogs_songbird, whylogs_songbird.engines as engines
    print("dask" in sys.modules, "pyspark" in sys.modules)
    sys.modules["dask"] = None  # as if not installed
    sys.modules["pyspark"] = None
    for call in (lambda: engines.profile_dask(object()), lambda: engines.profile_spark(object())):
        try:
            call()
        except engines.EngineUnavailableError as exc:
            print(exc)
    """
)


def test_the_base_import_loads_no_engine_and_a_missing_extra_names_the_pip_install():
    done = subprocess.run([sys.executable, "-c", WITHOUT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 3
    assert lines[0] == "False False"
    assert 'pip install "whylogs-songbird[dask]"' in lines[1]
    assert 'pip install "whylogs-songbird[spark]"' in lines[2]
    assert issubclass(EngineUnavailableError, ImportError)


# -- the example job ---------------------------------------------------------------------------

EXAMPLE = REPO_ROOT / "examples" / "publish_reference_job.py"


def test_the_example_job_runs_as_a_dask_script(data, server, tmp_path):
    for i, part in enumerate(np.array_split(data["small"], 2)):
        part.to_parquet(tmp_path / f"part-{i}.parquet", index=False)
    env = {**os.environ, "SONGBIRD_API_ENDPOINT": server.url}
    command = [sys.executable, str(EXAMPLE), str(tmp_path), "--reference", "train", "--segment-by", "region"]
    done = subprocess.run([*command, "--workers", "1"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    links = done.stdout.split()
    counts = data["small"]["region"].value_counts()
    assert len(links) == len(counts)
    shown = {}
    for url in links:
        text = page(url)
        region = re.fullmatch(r"train\[region=(\w+)\]", header_value(text, "alias")).group(1)
        shown[region] = int(header_value(text, "rows"))
    assert shown == counts.to_dict()


# -- the command line --------------------------------------------------------------------------


def test_cli_profiles_a_parquet_directory_on_dask(data, dask_client, server):
    from typer.testing import CliRunner

    from whylogs_songbird.cli import app

    args = ["profile", str(data["parquet"]), "--engine", "dask", "--segment-by", "region"]
    args += ["--reference", "train", "--timestamp", "2024-06-01", "--endpoint", server.url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    links = re.findall(r"http://\S+profile=\S+", result.stdout)
    counts = data["frame"]["region"].value_counts()
    shown = {}
    for url in links:
        text = page(url)
        region = re.fullmatch(r"train\[region=(\w+)\]", header_value(text, "alias")).group(1)
        shown[region] = int(header_value(text, "rows"))
        assert header_value(text, "timestamp") == str(TS)
    assert shown == counts.to_dict()


def test_cli_refuses_an_unknown_engine_before_sending_anything(data, server):
    from typer.testing import CliRunner

    from whylogs_songbird.cli import app

    result = CliRunner().invoke(app, ["profile", str(data["parquet"]), "--engine", "ray", "--endpoint", server.url])
    assert result.exit_code == 2, result.output
    assert "ray" in result.output and "pandas, dask, spark" in result.output
    assert server.stats().get("create_session", 0) == 0
