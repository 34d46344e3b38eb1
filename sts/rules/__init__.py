"""Rules administered as reviewed, reversible migrations.

``document`` loads and validates a rules file; ``lint`` flags over-broad rules; ``plan``
compares it with the database; ``migration`` writes the plan as an Alembic revision on
the ``rules`` branch, whose operations live in ``ops``.
"""
