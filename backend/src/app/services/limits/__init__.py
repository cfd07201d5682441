"""Limits shared by every process on one database: leaky buckets (`buckets`) and the model-call gate (`llm_gate`)."""

from app.services.limits.buckets import SharedBuckets

__all__ = ["SharedBuckets"]
