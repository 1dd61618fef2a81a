"""Delta read/write through delta-rs: modes, idempotency, snapshots, and nothing half-written."""

from pathlib import Path

import pandas as pd
import pytest

from epm_spark.errors import ConcurrentWriteError, InputError, TableNotFoundError
from epm_spark.io import delta
from epm_spark.io.schemas import PRODUCTS
from catalog_tiny import NOW, products


def sdf(spark, frame, partitions=2):
    return spark.createDataFrame(frame, schema=PRODUCTS.spark_schema()).repartition(partitions)


def parquet_files(warehouse, table):
    return sorted(Path(warehouse, table).rglob("*.parquet"))


def test_round_trip_keeps_types_and_rows(spark, warehouse):
    info = delta.write(sdf(spark, products(50)), warehouse, "products", "overwrite")
    assert (info.version, info.rows) == (0, 50)
    back = delta.read(spark, warehouse, "products").toPandas().sort_values("price").reset_index(drop=True)
    assert back.columns.tolist() == PRODUCTS.columns
    assert len(back) == 50 and back.price.tolist() == [float(i) for i in range(50)]
    assert dict(back.attributes[0]) == {"colour": "black"}
    assert back.ingested_at[0] == pd.Timestamp(NOW).tz_convert(None) or back.ingested_at[0].year == 2026
    # delta-rs and pandas see the same snapshot
    assert len(delta.read_pandas(warehouse, "products")) == 50
    # partition folders follow the declared partitioning
    assert {p.parent.name for p in parquet_files(warehouse, "products")} == {"source=ours"}


def test_replace_touches_one_partition_and_is_idempotent(spark, warehouse):
    both = pd.concat([products(10, "ours"), products(7, "theirs")])
    delta.write(sdf(spark, both), warehouse, "products", "overwrite")
    for _ in range(2):  # the same run twice: same table, no duplicates
        delta.write(sdf(spark, products(4, "ours", "r2")), warehouse, "products", "replace",
                    partition={"source": "ours"}, run_id="r2", job="ingest")
        counts = delta.read(spark, warehouse, "products").groupBy("source").count().toPandas()
        assert dict(zip(counts.source, counts["count"])) == {"ours": 4, "theirs": 7}


def test_replace_refuses_rows_of_another_partition_and_writes_nothing(spark, warehouse):
    delta.write(sdf(spark, products(3)), warehouse, "products", "overwrite")
    before = parquet_files(warehouse, "products")
    with pytest.raises(InputError, match="replacing source='ours' but a row has source='theirs'"):
        delta.write(sdf(spark, pd.concat([products(3), products(3, "theirs")])), warehouse, "products",
                    "replace", partition={"source": "ours"})
    assert parquet_files(warehouse, "products") == before
    assert delta.table_version(warehouse, "products") == 0


def test_append_with_run_id_is_skipped_the_second_time(spark, warehouse):
    first = delta.write(sdf(spark, products(5)), warehouse, "products", "append", run_id="r9", job="j")
    second = delta.write(sdf(spark, products(5)), warehouse, "products", "append", run_id="r9", job="j")
    assert not first.skipped and second.skipped
    assert delta.read(spark, warehouse, "products").count() == 5
    third = delta.write(sdf(spark, products(5, start=5)), warehouse, "products", "append", run_id="r10", job="j")
    assert not third.skipped and delta.read(spark, warehouse, "products").count() == 10


def test_a_task_failing_mid_write_leaves_the_table_as_it_was(spark, warehouse):
    from pyspark.sql import functions as F
    from pyspark.sql.functions import udf

    delta.write(sdf(spark, products(20)), warehouse, "products", "overwrite")
    before_files = parquet_files(warehouse, "products")

    @udf("string")
    def explode_on_last(title):
        if title == "listing 119":
            raise ValueError("disk full")
        return title

    # Many partitions: most tasks write their files before the last one fails.
    df = sdf(spark, products(120), partitions=6).withColumn("title", explode_on_last(F.col("title")))
    with pytest.raises(Exception, match="disk full"):
        delta.write(df, warehouse, "products", "overwrite")
    assert delta.table_version(warehouse, "products") == 0
    assert delta.read(spark, warehouse, "products").count() == 20
    assert parquet_files(warehouse, "products") == before_files  # staged files were removed


def test_a_failed_first_write_leaves_no_table(spark, warehouse):
    bad = products(3).assign(title=None)
    with pytest.raises(InputError, match=r"\d rows have no title"):
        delta.write(sdf(spark, bad), warehouse, "products", "overwrite")
    assert not delta.table_exists(warehouse, "products")
    assert not Path(warehouse, "products").exists()


def test_time_travel_reads_an_older_version(spark, warehouse):
    delta.write(sdf(spark, products(3)), warehouse, "products", "overwrite")
    delta.write(sdf(spark, products(8)), warehouse, "products", "overwrite")
    assert delta.read(spark, warehouse, "products").count() == 8
    assert delta.read(spark, warehouse, "products", version=0).count() == 3
    assert len(delta.read_pandas(warehouse, "products", version=0)) == 3
    with pytest.raises(InputError, match="no version 7"):
        delta.read(spark, warehouse, "products", version=7)


def test_clear_errors_for_missing_tables_columns_and_modes(spark, warehouse):
    with pytest.raises(TableNotFoundError, match="table 'candidates' does not exist.*epm-spark block"):
        delta.read(spark, warehouse, "candidates")
    with pytest.raises(InputError, match=r"rows lack columns \['run_id'\]"):
        delta.write(sdf(spark, products(2)).drop("run_id"), warehouse, "products", "overwrite")
    with pytest.raises(InputError, match="needs the partition"):
        delta.write(sdf(spark, products(2)), warehouse, "products", "replace")
    with pytest.raises(InputError, match="partitioned by"):
        delta.write(sdf(spark, products(2)), warehouse, "products", "replace", partition={"run_id": "x"})
    with pytest.raises(InputError, match="source 'a b' is not allowed"):
        delta.write(sdf(spark, products(2, source="a b")), warehouse, "products", "overwrite")


def test_empty_overwrite_creates_an_empty_readable_table(spark, warehouse):
    empty = spark.createDataFrame([], PRODUCTS.spark_schema())
    info = delta.write(empty, warehouse, "products", "overwrite")
    assert info.rows == 0 and delta.read(spark, warehouse, "products").count() == 0


def test_pandas_writes_share_the_commit_rules(warehouse):
    delta.write_pandas(warehouse, "products", products(6), "overwrite")
    delta.write_pandas(warehouse, "products", products(2, "theirs"), "replace", partition={"source": "theirs"})
    delta.write_pandas(warehouse, "products", products(1, "theirs"), "replace", partition={"source": "theirs"})
    back = delta.read_pandas(warehouse, "products")
    assert back.groupby("source").size().to_dict() == {"ours": 6, "theirs": 1}
    only = delta.read_pandas(warehouse, "products", filters=[("source", "=", "ours")], columns=["product_id"])
    assert only.columns.tolist() == ["product_id"] and len(only) == 6
    with pytest.raises(InputError, match="rows lack columns"):
        delta.write_pandas(warehouse, "products", products(1).drop(columns=["title"]), "overwrite")
    [row] = delta.describe_warehouse(warehouse)
    assert (row["table"], row["rows"], row["version"]) == ("products", 7, 2)


def test_a_read_modify_write_fails_when_its_partition_changed_after_the_read(warehouse):
    """based_on: rows another commit added to the replaced partition since the read fail the write, also
    where that partition was empty at the read; commits to other partitions do not."""
    delta.write_pandas(warehouse, "products", products(2), "overwrite")
    read_at = delta.table_version(warehouse, "products")
    delta.write_pandas(warehouse, "products", products(1, "theirs"), "replace", partition={"source": "theirs"})
    with pytest.raises(ConcurrentWriteError, match="same rows"):
        delta.write_pandas(warehouse, "products", products(1, "theirs", start=5), "replace",
                           partition={"source": "theirs"}, based_on=read_at)
    assert delta.read_pandas(warehouse, "products", filters=[("source", "=", "theirs")]).product_id.tolist() == ["0"]
    read_at = delta.table_version(warehouse, "products")
    delta.write_pandas(warehouse, "products", products(1, "other"), "replace", partition={"source": "other"})
    delta.write_pandas(warehouse, "products", products(3, "theirs"), "replace", partition={"source": "theirs"},
                       based_on=read_at)
    assert delta.read_pandas(warehouse, "products").groupby("source").size().to_dict() == {
        "other": 1, "ours": 2, "theirs": 3}


def test_object_store_warehouse_paths_and_the_writer_limit(spark):
    assert delta.table_uri("s3a://bucket/wh/", "products") == "s3a://bucket/wh/products"
    with pytest.raises(InputError, match="object store: use the Delta jars"):
        delta.write_pandas("s3a://bucket/wh", "products", products(1), "overwrite")
