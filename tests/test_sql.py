import io
import json
from pathlib import Path

import pandas as pd
import pytest

from epm_spark.errors import InputError
from epm_spark.io import delta
from epm_spark.pipeline.sql import run_sql
from epm_spark.spark import SQL_WAREHOUSE, sql_warehouse_dir

from catalog_tiny import products


def test_every_table_is_a_view_in_three_formats(spark, settings):
    delta.write_pandas(settings.warehouse, "products", pd.concat([products(3), products(2, "theirs")]), "overwrite")
    out = io.StringIO()
    n = run_sql(spark, settings, "SELECT source, count(*) AS n FROM products GROUP BY source ORDER BY source",
                fmt="table", out=out)
    lines = out.getvalue().splitlines()
    assert n == 2 and lines[0].split("|")[0].strip() == "source"
    assert lines[2].split("|")[1].strip() == "3" and lines[-1] == "(2 rows)"
    out = io.StringIO()
    run_sql(spark, settings, "SELECT product_id, price FROM products WHERE source = 'theirs' ORDER BY 1",
            fmt="csv", out=out)
    assert out.getvalue().splitlines() == ["product_id,price", "0,0.0", "1,1.0"]
    out = io.StringIO()
    run_sql(spark, settings, "SELECT attributes FROM products LIMIT 1", fmt="json", out=out)
    assert json.loads(out.getvalue()) == {"attributes": {"colour": "black"}}


def test_a_bad_query_gets_the_sql_error(spark, settings):
    delta.write_pandas(settings.warehouse, "products", products(1), "overwrite")
    with pytest.raises(InputError, match=r"PARSE_SYNTAX_ERROR.*\(tables: products\)"):
        run_sql(spark, settings, "SELEC 1", out=io.StringIO())
    with pytest.raises(InputError, match="UNRESOLVED_COLUMN") as info:
        run_sql(spark, settings, "SELECT nope FROM products", out=io.StringIO())
    assert "\tat " not in str(info.value) and "Project" not in str(info.value)
    with pytest.raises(InputError, match="TABLE_OR_VIEW_NOT_FOUND"):
        run_sql(spark, settings, "SELECT * FROM candidates", out=io.StringIO())


@pytest.mark.parametrize("statement", ["DROP TABLE products", "DELETE FROM products",
                                       "-- tidy up\n  insert into products select * from products",
                                       "/* x */ TRUNCATE TABLE products"])
def test_statements_that_would_change_a_table_are_refused(spark, settings, statement):
    delta.write_pandas(settings.warehouse, "products", products(2), "overwrite")
    version = delta.table_version(settings.warehouse, "products")
    keyword = statement.split("\n")[-1].replace("/* x */", "").split()[0].upper()
    with pytest.raises(InputError, match=f"epm-spark sql only reads the warehouse: {keyword} refused"):
        run_sql(spark, settings, statement, out=io.StringIO())
    assert run_sql(spark, settings, "SELECT * FROM products", out=io.StringIO()) == 2
    assert delta.table_version(settings.warehouse, "products") == version


def test_spark_sql_catalog_folder_is_kept_in_the_warehouse(spark, session_warehouse, settings):
    # Not ./spark-warehouse wherever a job happens to be started.
    assert spark.conf.get("spark.sql.warehouse.dir").removeprefix("file:") == sql_warehouse_dir(session_warehouse)
    assert sql_warehouse_dir("s3a://lake/epm/") == "s3a://lake/epm/" + SQL_WAREHOUSE
    assert Path(sql_warehouse_dir("wh")) == Path.cwd() / "wh" / SQL_WAREHOUSE
    # It is no Delta table, so it is not listed as one.
    delta.write_pandas(settings.warehouse, "products", products(1), "overwrite")
    (Path(settings.warehouse) / SQL_WAREHOUSE).mkdir()
    assert delta.list_tables(settings.warehouse) == ["products"]
