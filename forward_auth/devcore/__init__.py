"""The development core: an in-memory SuperTokens core for development and tests, apart from the
product. ``state`` holds the sessions and keys, ``access_token`` reads the tokens it is sent,
``resources`` is its HTTP API, ``server`` serves it, ``minter`` signs tokens. Only the CLI's ``dev-core`` and ``demo`` commands use it."""
