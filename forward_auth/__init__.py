"""forward-auth: a SuperTokens session gate for reverse proxies."""

__version__ = "0.1.0"
