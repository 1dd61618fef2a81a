"""Settings of product search: the search-log simulator (``search_log:``) and the ranker (``ranker:``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from epm_spark.errors import ConfigError
from epm_spark.models.search.clicks import ClickModelSettings
from epm_spark.models.search.queries import QuerySettings

__all__ = ["SearchLogSettings", "RankerSettings", "TASKS"]

TASKS = ("click", "cart", "purchase")


@dataclass
class SearchLogSettings:
    """``epm-spark generate-search-log``: which real titles, how many queries, the click model."""

    # Benchmark folders whose listings become the search catalog (relative paths from the working directory).
    benchmarks: list[str] = field(default_factory=lambda: [
        "../shared/data/benchmarks/wdc_products", "../shared/data/benchmarks/abt_buy",
        "../shared/data/benchmarks/amazon_google"])
    # The products source the catalog is written to (and searched by `rank`).
    source: str = "catalog"
    queries: QuerySettings = field(default_factory=QuerySettings)
    clicks: ClickModelSettings = field(default_factory=ClickModelSettings)


@dataclass
class RankerSettings:
    """The multi-task ranker: backbone, heads, losses and the default training budget."""

    # A Hugging Face encoder folder, or packaged:minilm.
    backbone: str = "packaged:minilm"
    # Heads trained together; one task trains a single-task baseline.
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    # Weight of each task's normalised loss in the sum.
    task_weights: dict[str, float] = field(default_factory=lambda: {"click": 1.0, "cart": 1.0, "purchase": 1.0})
    # Conditional chain: p_cart = p_click * s(z_cart), p_purchase = p_cart * s(z_purchase).
    chain: bool = False
    # The blended score `rank` orders by: a weighted sum of the heads' probabilities.
    blend: dict[str, float] = field(default_factory=lambda: {"click": 0.2, "cart": 0.3, "purchase": 0.5})
    # Weight lambda of the listwise term (ListNet top-one, per query; docs/ranker.md); 0 trains pointwise only
    # (lambda 1 lost to pointwise on the valid queries' cart and purchase NDCG@10).
    listwise_weight: float = 0.0
    max_length: int = 64
    tower_hidden: int = 128
    # Fine-tune only the top N transformer layers (embeddings and lower layers frozen: backpropagation
    # stops there, a third less compute per step on MiniLM's 6 layers); 0 fine-tunes all of them.
    train_layers: int = 3
    # Listing text: the title and brand, and the price (the purchase head can learn price sensitivity).
    with_price: bool = True
    # The retrieval similarity as a feature: the cosine s of the dual-encoder that retrieves the
    # candidates (encoder.backbone) enters every head, z_t = tower_t(h) + a_t s, and each head starts
    # as a logistic regression on s. The cross-encoder then learns what the cosine misses.
    similarity_feature: bool = True
    # The coverage features (models/search/coverage.py): how much of the query the listing's text
    # covers, by words and by character trigrams, enter every head beside the similarity (and
    # start in its logistic regression). They need no catalog index, so every scoring path has them.
    lexical_features: bool = True
    # The default budget: training pairs come from at most this many training queries (all their
    # impressed listings); about 14 pairs per query.
    max_train_queries: int = 2000
    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 1e-4
    head_learning_rate: float = 1e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    # bf16 autocast where it beats float32: CUDA, or a CPU with AMX (with AVX-512 BF16 alone the
    # ranker trains 1.5x slower under it; epm_spark/models/precision.py).
    bf16: bool = True
    seed: int = 0
    # Steps between checkpoints (the model folder's checkpoints/): a killed run resumes from the last.
    checkpoint_every: int = 200
    models_dir: str = "models/ranker"
    inference_batch_size: int = 64
    device: str = "auto"
    # evaluate ranking: resamples of the paired bootstrap over queries.
    bootstrap_resamples: int = 2000

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown or not self.tasks:
            raise ConfigError(f"ranker.tasks must name one or more of {', '.join(TASKS)}; got {self.tasks}")
        self.tasks = [t for t in TASKS if t in self.tasks]
        if self.chain and self.tasks != list(TASKS):
            raise ConfigError("ranker.chain needs all three tasks (click, cart, purchase)")
        for name in ("task_weights", "blend"):
            bad = sorted(set(getattr(self, name)) - set(TASKS))
            if bad or any(v < 0 for v in getattr(self, name).values()):
                raise ConfigError(f"ranker.{name}: weights >= 0 for {', '.join(TASKS)}; got {getattr(self, name)}")
        for name in ("max_length", "tower_hidden", "max_train_queries", "batch_size", "inference_batch_size",
                     "bootstrap_resamples", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ranker.{name} must be > 0")
        if self.train_layers < 0:
            raise ConfigError("ranker.train_layers must be >= 0 (0: all layers)")
        if self.listwise_weight < 0:
            raise ConfigError("ranker.listwise_weight must be >= 0")
        if self.epochs <= 0 or self.learning_rate <= 0 or self.head_learning_rate <= 0:
            raise ConfigError("ranker epochs and learning rates must be > 0")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError("ranker.warmup_ratio must be in [0, 1)")
