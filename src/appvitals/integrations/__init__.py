"""Integrations with servers and frameworks, one module each, imported on demand."""
