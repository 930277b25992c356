"""A test function whose import fails, as a user's bug would."""

raise ImportError("broken_app cannot be imported")
