"""Events in: the event contract, producers, the synthetic world, and the streaming tokenizer."""
