"""mx-exporter: tells mail operators, before their users do, that a domain's MX can no longer be reached."""

__version__ = "0.1.0"
