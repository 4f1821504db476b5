"""Runtime metrics: the lab's database state exported in Prometheus format."""

from lab.observability.collector import LabCollector
from lab.observability.exporter import DEFAULT_PORT, lab_registry, start_exporter

__all__ = ["DEFAULT_PORT", "LabCollector", "lab_registry", "start_exporter"]
