"""The analysis: pure functions over DataFrames (prepare, fit, name, match cohorts).

Imports nothing from outputs, adapters, cloud or google.*; a test keeps it so.
"""
