"""What a listing says about the product, with the seller's noise taken out.

Three steps, each usable alone:

* :func:`strip_noise`: remove promotional words ("free shipping", "best price", "new",
  "genuine"), platform and shop tags ("Amazon's Choice", "[Prime]", "| Shop Name"),
  bundle text ("+ case", "with charger", "2-pack") and the quoting left over from web
  extraction (``"Null"``, ``@en``). Returns the clean title and the removed phrases.
* :func:`extract`: the attributes of one listing (a ``products`` row as a mapping):
  brand, model numbers, product-line tokens, capacities and sizes with units
  normalised, colours (English, German, French, Spanish, Italian, Dutch basics),
  pack quantity and condition.
* :func:`compare`: ``same`` / ``different`` / ``unknown`` per attribute of
  :data:`ATTRIBUTES`, each with the two values
  and the reason, so a rationale can quote what it saw.

Unit rules (see ``docs/matcher-teacher.md``): storage is read in GB with decimal
prefixes (1 TB = 1000 GB) and two storage values are the same when within 3% of
each other, which also makes 1 TB == 1024 GB and 8 GB == 8192 MB; lengths go to mm
(1 inch = 25.4 mm, ``"``, ``''``, ``inch``, ``zoll``), volumes to ml, masses to g,
charge to mAh, power to W, all compared within 2%. Rule-based on purpose: it needs
no model, explains itself, and is the offline teacher's eyes.

The package, by idea: :mod:`.noise`, :mod:`.extraction` (with :mod:`.lexicons`, :mod:`.measures` and
:mod:`.codes`), :mod:`.comparison`. The matcher's teacher, judges and features, the search-log
simulator and the query rewriter all read listings through it.
"""

from epm_spark.models.attributes.codes import looks_like_model_number, model_numbers_related, normalise_model_number
from epm_spark.models.attributes.comparison import (
    ATTRIBUTES, AttributeComparison, Evidence, TokenWeights, compare, token_weights, unexplained_codes,
)
from epm_spark.models.attributes.extraction import ListingAttributes, extract
from epm_spark.models.attributes.lexicons import normalise_brand
from epm_spark.models.attributes.measures import Measure, parse_measures
from epm_spark.models.attributes.noise import CONDITIONS, NoiseStripped, strip_noise

__all__ = [
    "ATTRIBUTES",
    "CONDITIONS",
    "Measure",
    "NoiseStripped",
    "ListingAttributes",
    "AttributeComparison",
    "Evidence",
    "strip_noise",
    "extract",
    "compare",
    "normalise_brand",
    "normalise_model_number",
    "looks_like_model_number",
    "model_numbers_related",
    "unexplained_codes",
    "token_weights",
    "TokenWeights",
    "parse_measures",
]
