"""kiln's shipped TOML files, installed as the package ``kiln_configs``.

``compiler.toml`` (compiler defaults), the example zoos (``zoo-*.toml``) and the autotune
search spaces (``autotune/*.toml``). Code finds them through ``compiler.config.config_file``.
"""
