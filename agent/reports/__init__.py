"""Reports for people: the vehicle's part of the Att.3 event report (per quarter / year) and
the Att.3 accident report draft, derived from stored records and persisted statistics, never
recomputed from CAN."""
