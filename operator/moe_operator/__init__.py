"""moe-operator: plan, serve and autoscale Mixture-of-Experts models on SGLang multi-node groups."""

__version__ = "0.1.0"

API_GROUP = "moe-operator.io"
API_VERSION = "v1alpha1"
