"""SGLang 0.5.23 simulator for the test rig: a leader/worker HTTP server with a KV-pool model (`engine`, `server`,
`metrics`) and a pod runner that serves kwok pods at their loopback pod IPs (`runner`)."""

from .engine import AdmissionError, Engine, SimConfig, SimRequest

__all__ = ["AdmissionError", "Engine", "SimConfig", "SimRequest"]
