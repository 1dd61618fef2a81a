"""Typed settings: dataclasses loaded from ``conf/*.yaml`` and overridden per key.

Every job parameter is declared once, here or in the section dataclass of the
module that owns it, with its type and default. Loading is strict: a key that no
dataclass declares is an error that names the dotted key, and a value of the
wrong type is an error that names the key and the expected type.

    settings = load_settings("conf/local.yaml", overrides=["block.k=20"])
    settings.block.k  # 20
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from epm_spark.errors import ConfigError
from epm_spark.models.matcher.settings import MatcherSettings
from epm_spark.models.matcher.supervision.settings import JudgeSettings, RewardSettings, TeacherSettings
from epm_spark.models.index import IndexSettings
from epm_spark.models.encoder.config import EncoderSettings
from epm_spark.models.rewriter.settings import RewriterSettings
from epm_spark.models.search.settings import RankerSettings, SearchLogSettings

__all__ = [
    "ConfigError",
    "Settings",
    "SparkSettings",
    "DeltaSettings",
    "IngestSettings",
    "GenerateSettings",
    "BlockSettings",
    "from_dict",
    "load_settings",
    "to_dict",
    "DEFAULT_CONF",
]

DEFAULT_CONF = Path(__file__).resolve().parent.parent / "conf" / "local.yaml"


@dataclass
class SparkSettings:
    """How the job's Spark session is built when no ``spark-submit`` gave one."""

    master: str = "local[*]"
    app_name: str = "epm-spark"
    # Local runs shuffle little data; Spark's default of 200 partitions wastes seconds per stage.
    shuffle_partitions: int = 8
    arrow_max_records_per_batch: int = 2048
    driver_memory: str = "4g"
    ui_enabled: bool = True
    log_level: str = "WARN"
    # Passed through verbatim, e.g. the GPU scheduling keys of conf/cluster-gpu.yaml.
    conf: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _positive(self, "shuffle_partitions", "arrow_max_records_per_batch")


@dataclass
class DeltaSettings:
    """Which Delta writer to use and how large its files are."""

    # auto: native delta-spark when the session has the Delta jars, else delta-rs.
    engine: Literal["auto", "native", "delta-rs"] = "auto"
    # Rows per Parquet file a task writes (bigger partitions are split).
    max_rows_per_file: int = 1_000_000

    def __post_init__(self) -> None:
        _positive(self, "max_rows_per_file")


@dataclass
class IngestSettings:
    """Limits that send a catalog row to quarantine instead of ``products``."""

    max_title_chars: int = 1_000
    max_field_chars: int = 20_000
    # CSV exports from spreadsheets often use ';' and a decimal comma; None sniffs the delimiter.
    csv_delimiter: str | None = None
    csv_encoding: str = "utf-8"
    default_currency: str | None = None
    # Above this share of rejected rows the run stops without writing: a wrong delimiter,
    # encoding or --map rejects almost everything, and must not empty the catalog.
    max_quarantine_share: float = 0.5

    def __post_init__(self) -> None:
        _positive(self, "max_title_chars", "max_field_chars")
        _share(self, "max_quarantine_share")
        if self.default_currency is not None:
            from epm_spark.io.prices import normalise_currency

            code = normalise_currency(self.default_currency)
            if code is None:
                raise ConfigError(f"default_currency {self.default_currency!r} is not a known currency")
            self.default_currency = code


@dataclass
class GenerateSettings:
    """Synthetic catalogs of the embedded default (``epm-spark generate``)."""

    products: int = 400
    competitors: int = 2
    seed: int = 7
    # Share of our products each competitor also sells.
    overlap: float = 0.7
    # Share of our products that get a near-miss sibling (other capacity, colour, model number).
    near_miss_rate: float = 0.3

    def __post_init__(self) -> None:
        _positive(self, "products")
        if self.competitors < 0:
            raise ConfigError("competitors must be >= 0")
        _share(self, "overlap", "near_miss_rate")


@dataclass
class BlockSettings:
    """Candidate blocking: how many neighbours, which index, how the search is spread over tasks."""

    k: int = 10
    # Candidates below this similarity are dropped (None keeps all k).
    similarity_floor: float | None = None
    # Query buckets searched in parallel (each bucket x shard is one task).
    query_partitions: int = 8
    # Right sides larger than this are split into shards searched separately, top-k merged.
    max_shard_size: int = 1_000_000
    # Where index artifacts are kept (default: WAREHOUSE/_indexes).
    index_dir: str | None = None
    index: IndexSettings = field(default_factory=IndexSettings)

    def __post_init__(self) -> None:
        _positive(self, "k", "query_partitions", "max_shard_size")
        if self.similarity_floor is not None and not -1.0 <= self.similarity_floor <= 1.0:
            raise ConfigError("similarity_floor must be between -1 and 1")


@dataclass
class MatchSettings:
    """The nightly matching cascade: floor, label mode, explain mode for the uncertain."""

    # A matcher model folder (epm-spark train-matcher); required by `epm-spark match`.
    model: str | None = None
    # Pairs less similar than this are no_match without the model (None: every pair goes to the model).
    similarity_floor: float | None = 0.35
    # The uncertainty band: P(match) within this distance of the decision threshold gets the full
    # explained decision (generation), the rest keep the label mode's one-forward-pass decision.
    uncertainty_margin: float = 0.15
    explain: Literal["band", "all", "none"] = "band"
    # At most this many explained pairs per batch of a task (the ones nearest the threshold first);
    # None explains the whole band. Generation dominates cost on CPU.
    max_explain_per_batch: int | None = None
    # None: the threshold tuned on validation and stored with the model.
    threshold: float | None = None

    def __post_init__(self) -> None:
        _share(self, "uncertainty_margin", "threshold")
        if self.max_explain_per_batch is not None and self.max_explain_per_batch < 0:
            raise ConfigError("max_explain_per_batch must be >= 0")
        if self.similarity_floor is not None and not -1.0 <= self.similarity_floor <= 1.0:
            raise ConfigError("similarity_floor must be between -1 and 1")


@dataclass
class DedupSettings:
    """Clustering one catalog from its accepted matches."""

    # Clusters with more listings than this are flagged: chains of weak matches, not one product.
    max_cluster_size: int = 20
    # Accept only matches at least this probable (None: the matcher's own label decides).
    min_probability: float | None = None

    def __post_init__(self) -> None:
        _positive(self, "max_cluster_size")
        _share(self, "min_probability")


@dataclass
class PriceMatchSettings:
    """Comparing our prices with matched competitor prices in one currency."""

    currency: str = "EUR"
    # Units of `currency` per unit of each currency; a price in a currency not listed is not converted.
    rates: dict[str, float] = field(default_factory=lambda: {"EUR": 1.0, "USD": 0.92, "GBP": 1.17})
    min_probability: float | None = None
    # A competitor price below min_ratio or above max_ratio times ours is flagged implausible
    # (a wrong match, a multipack, a unit or currency error) and not reported as an undercut.
    min_ratio: float = 0.35
    max_ratio: float = 3.0

    def __post_init__(self) -> None:
        from epm_spark.io.prices import normalise_currency

        _share(self, "min_probability")
        if not 0.0 < self.min_ratio < 1.0 < self.max_ratio:
            raise ConfigError(f"need 0 < min_ratio < 1 < max_ratio, got min_ratio {self.min_ratio}, "
                              f"max_ratio {self.max_ratio}")

        code = normalise_currency(self.currency)
        if code is None:
            raise ConfigError(f"currency {self.currency!r} is not a known currency code")
        self.currency = code
        rates = {}
        for name, rate in self.rates.items():
            iso = normalise_currency(name)
            if iso is None:
                raise ConfigError(f"rates: {name!r} is not a known currency code")
            if rate <= 0:
                raise ConfigError(f"rates.{name} must be > 0")
            rates[iso] = float(rate)
        if self.currency not in rates:
            rates[self.currency] = 1.0
        elif rates[self.currency] != 1.0:
            raise ConfigError(f"rates.{self.currency} must be 1.0: it is the reporting currency")
        self.rates = rates


@dataclass
class ReviewSettings:
    """`epm-spark review serve`: the local review page (docs/review.md)."""

    # Loopback unless told otherwise: the page has no login, only a reviewer name.
    host: str = "127.0.0.1"
    port: int = 8765
    # How long a pair shown to one reviewer is kept from the others; a reviewer who walks away
    # frees it after this long.
    lease_seconds: int = 300
    # Matcher pairs of the last match run within this distance of the run's decision threshold
    # join the queue (after the teacher/gold disagreements).
    uncertainty_margin: float = 0.15
    # Clusters listed per kind (largest, least certain) and undercuts listed on the price page.
    clusters: int = 8
    price_gaps: int = 20

    def __post_init__(self) -> None:
        _positive(self, "lease_seconds", "clusters", "price_gaps")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be between 1 and 65535, got {self.port}")
        _share(self, "uncertainty_margin")


@dataclass
class DemoSettings:
    """`make demo`: the catalog sizes and the budget of the small matcher it trains on first run."""

    products: int = 100
    competitors: int = 2
    k: int = 3
    # The cascade trained once on synthetic pairs and cached (EPM_CACHE or ~/.cache/epm-spark):
    # the recipe of `train-matcher --stage all` with a first-run budget of a few CPU minutes.
    # Products of the separate training catalog the matcher learns from (not the night's).
    training_products: int = 400
    cross_encoder_epochs: float = 4.0
    sft_steps: int = 24
    sft_examples: int = 192
    rl_steps: int = 2
    rl_examples: int = 16
    # Explained decisions per batch: generation is what costs on a CPU, so the demo's night
    # keeps the teacher's rationale for every pair and skips the student's.
    max_explain_per_batch: int = 0

    def __post_init__(self) -> None:
        _positive(self, "products", "k", "sft_steps", "sft_examples", "cross_encoder_epochs", "training_products")
        if self.competitors < 1:
            raise ConfigError("competitors must be >= 1: price matching needs a competitor")
        if self.rl_steps < 0 or self.rl_examples < 0:
            raise ConfigError("rl_steps and rl_examples must be >= 0")


@dataclass
class Settings:
    """The root of ``conf/*.yaml``: one section per concern."""

    warehouse: str = "warehouse"
    spark: SparkSettings = field(default_factory=SparkSettings)
    delta: DeltaSettings = field(default_factory=DeltaSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    teacher: TeacherSettings = field(default_factory=TeacherSettings)
    judges: JudgeSettings = field(default_factory=JudgeSettings)
    rewards: RewardSettings = field(default_factory=RewardSettings)
    matcher: MatcherSettings = field(default_factory=MatcherSettings)
    block: BlockSettings = field(default_factory=BlockSettings)
    match: MatchSettings = field(default_factory=MatchSettings)
    dedup: DedupSettings = field(default_factory=DedupSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    price_match: PriceMatchSettings = field(default_factory=PriceMatchSettings)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    search_log: SearchLogSettings = field(default_factory=SearchLogSettings)
    ranker: RankerSettings = field(default_factory=RankerSettings)
    rewriter: RewriterSettings = field(default_factory=RewriterSettings)


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{name} must be > 0, got {getattr(obj, name)!r}")


def _share(obj: Any, *names: str) -> None:
    """Probabilities, margins and rates: between 0 and 1 where set."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must be between 0 and 1, got {value!r}")


# --------------------------------------------------------------------------- loading


def from_dict(cls: type, data: dict[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and wrong types are errors."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'settings'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"unknown setting '{prefix}{key}'; known keys of '{prefix.rstrip('.') or 'settings'}': "
                + ", ".join(sorted(known))
            )
    kwargs = {key: _coerce(hints[key], value, f"{prefix}{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{prefix.rstrip('.') or 'settings'}: {exc}") from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"setting '{key}': {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"setting '{key}' must be one of {', '.join(map(repr, args))}; got {value!r}")
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"setting '{key}' expects a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"setting '{key}' expects a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"setting '{key}' expects true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"setting '{key}' expects an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads 2e-5 (no dot) as text; it is still a number.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"setting '{key}' expects a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"setting '{key}' expects a string, got {value!r}")
    return value


def _apply_override(data: dict[str, Any], assignment: str, root: type = None) -> None:
    """Set ``a.b.c=value`` in ``data``; a mapping-typed setting takes the rest of the path as one key,
    so ``spark.conf.spark.executor.memory=8g`` sets the key ``spark.executor.memory``."""
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' must look like section.key=value")
    dotted, raw = assignment.split("=", 1)
    parts = [p for p in dotted.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{assignment}' names no setting")
    node, cls = data, root
    i = 0
    while i < len(parts) - 1:
        part = parts[i]
        tp = typing.get_type_hints(cls).get(part) if cls is not None and dataclasses.is_dataclass(cls) else None
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{assignment}': '{part}' is not a section")
        node = child
        if tp is not None and typing.get_origin(tp) is dict:
            parts = parts[: i + 1] + [".".join(parts[i + 1:])]
            break
        cls = tp if tp is not None and dataclasses.is_dataclass(tp) else None
        i += 1
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = raw


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """The mapping at the top of a YAML file (``what`` names the file in errors); empty for an empty file."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping")
    return loaded or {}


def load_settings(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    warehouse: str | None = None,
) -> Settings:
    """Read ``path`` (default ``conf/local.yaml``), apply ``key=value`` overrides, validate.

    The warehouse comes from, in order: the ``warehouse`` argument (``--warehouse``) or a
    ``warehouse=`` override (both given and different is an error), ``EPM_WAREHOUSE``, the
    file, the default ``./warehouse``. What a person typed wins over the environment.
    """
    conf_path = Path(path) if path is not None else DEFAULT_CONF
    data: dict[str, Any] = {}
    if path is not None or conf_path.exists():
        data = read_yaml_mapping(conf_path, "configuration file")
    if os.environ.get("EPM_WAREHOUSE"):
        data["warehouse"] = os.environ["EPM_WAREHOUSE"]
    for assignment in overrides:
        _apply_override(data, assignment, Settings)
    overridden = data.get("warehouse") if any(a.split("=", 1)[0].strip() == "warehouse" for a in overrides) else None
    if warehouse and overridden is not None and str(overridden) != warehouse:
        raise ConfigError(f"--warehouse {warehouse} and --set warehouse={overridden} disagree; give one of them")
    if warehouse:
        data["warehouse"] = warehouse
    return from_dict(Settings, data)


def to_dict(settings: Any) -> dict[str, Any]:
    """The settings as plain data, e.g. to store beside a trained model."""
    return dataclasses.asdict(settings)
