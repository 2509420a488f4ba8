"""GeoRSCLIP's benchmark suite: zero-shot classification, cross-modal retrieval, semantic localization."""
