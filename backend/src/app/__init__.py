"""AI Trading Agent: an LLM decision engine for crypto perpetual futures."""
