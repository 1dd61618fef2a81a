"""The nightly catalog jobs: catalogs in, embed, block, match, de-duplicate, price-match, and the night
that runs them."""
