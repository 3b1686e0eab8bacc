"""The event vocabulary every package shares: the event contract, decoding, event tokens, the
tokenizer's merge rules, the catalogue and the data-folder layout. Imports nothing else of
Marquee, so the flow, training, the feature repo and the service can all depend on it.
"""
