"""Everything that speaks SQL: the pool, migrations and the statements each part runs."""
