"""Stage after store, plan/diff: compare two bundles (each side a blueprint, a bundle directory, a
generation or a git revision; sides.py) and say what going from one to the other does: the
actions (actions.py), what it means for security (security.py), what changed in the blueprint's
meaning (semantic.py), the files; analysis.py puts them together, views.py shows them."""

# GitHub refuses comments over 65536 characters: views cut the file diffs to stay below this
MARKDOWN_LIMIT = 60000
