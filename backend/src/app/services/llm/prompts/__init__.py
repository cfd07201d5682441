"""Prompt templates (Jinja2, sandboxed) and the builder that renders a context into a prompt."""
