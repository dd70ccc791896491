"""stapled: keeps OCSP staples fresh and fully validated for TLS servers."""

__version__ = "0.1.0"
