"""Features: `FeatureSpec` per field, hashing of raw values to 64-bit ids, `FeaturePipeline`; item content
encoders (text, images) and the `ContentCache` of their vectors."""

from freshrec._hashing import field_salt, hash_values, missing_id
from freshrec.features.content_cache import ContentCache
from freshrec.features.encoders import ContentEncoder, EncoderMissing, ImageEncoder, TextEncoder
from freshrec.features.pipeline import FeaturePipeline
from freshrec.features.spec import FeatureSpec, default_specs

__all__ = ["ContentCache", "ContentEncoder", "EncoderMissing", "FeaturePipeline", "FeatureSpec", "ImageEncoder",
           "TextEncoder", "default_specs", "field_salt", "hash_values", "missing_id"]
