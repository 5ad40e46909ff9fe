"""The tools tree: a Debian root of moat's own that holds the validators at known versions.

Like mkosi's ToolsTree=, `moat build` runs every validator inside it rather than with whatever
the user's machine has installed, so every user checks with the same tool versions and a cached
verdict means the same thing everywhere. It is built once per machine with debootstrap (as root),
keyed by the hash of its recipe (recipe.py), kept under the user's cache directory, and entered
for each worker of a build in private namespaces (enter.py): nothing is installed or started on the
user's own system.

    recipe.py   what the tree holds (packages from the validators' declarations) and its key
    build.py    building it: debootstrap + apt-get + pip in a private mount namespace, atomically
    enter.py    running commands inside it, with the bundle and the validator scripts mounted:
                one entry per command, or a Session that runs many in one entry
"""
