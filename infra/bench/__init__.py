"""Benchmarks (``marquee bench ...``): each prints its figures beside a floor measured in the
same run, and writes JSON and a chart under ``var/bench/``.
"""
