"""Features: `FeatureSpec` per field, hashing of raw values to 64-bit ids, `FeaturePipeline`."""

from freshrec._hashing import field_salt, hash_values, missing_id
from freshrec.features.pipeline import FeaturePipeline
from freshrec.features.spec import FeatureSpec, default_specs

__all__ = ["FeaturePipeline", "FeatureSpec", "default_specs", "field_salt", "hash_values", "missing_id"]
