"""The domain: plain functions over models and plugins, free of HTTP."""
