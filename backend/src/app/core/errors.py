"""Root of the agent's exception taxonomy. Packages derive their own errors from these."""


class TradingAgentError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigurationError(TradingAgentError):
    """The configuration cannot work (missing key, refused mode, bad value). Stop and tell the user."""


class TemporaryError(TradingAgentError):
    """A failure that may pass by itself (network, rate limit). Safe to retry reads; never order creation."""
