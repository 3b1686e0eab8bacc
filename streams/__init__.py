"""Events in: the Kafka/Bytewax runtime that turns the events topic into tokens, features and
dead letters, over the shared event vocabulary in ``streams.contract``.
"""
