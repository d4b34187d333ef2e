"""One file per schema revision, oldest first; a model change in db.py needs a new one (tests check)."""
