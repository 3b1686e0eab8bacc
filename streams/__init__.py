"""Events in: the Kafka/Bytewax runtime that turns the events topic into tokens, features and
dead letters, over the shared event vocabulary in ``streams.contract``.

The hot modules run compiled when the install built them; ``streams.compiled`` decides, before
any of them is imported, whether their pure-Python source runs instead.
"""

from streams import compiled

compiled.install()
