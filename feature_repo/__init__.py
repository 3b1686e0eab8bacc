"""Feast definitions and the online store's readers and writers.

Feast is imported through ``feast_import`` first, so every process starts it the lean way.
"""

from feature_repo.feast_import import import_feast

import_feast()
