"""The one-machine stack: the embedded servers that `make run` and the tests start.

The same classes start the servers for ``casatwin stack up`` (``make run``) and for the test
session, so what the tests exercise is what a developer runs.
"""
