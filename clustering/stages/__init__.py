"""The stages every run goes through, whichever engine reads and scores its rows.

clustering.job strings them together; clustering.engines supplies what differs between
engines (how rows are read, where every row is assigned, how the clusters table is replaced,
how the people-facing CSVs are written). Nothing here knows which engine runs.
"""
