"""Pure policy: compile rule definitions, evaluate them against verified facts.

Nothing here touches the database, the clock, Flask or logging.
"""
