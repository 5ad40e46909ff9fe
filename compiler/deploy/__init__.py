"""Stage after store: deploy. A stored bundle goes to its KVM host over SSH and becomes the host's
current generation (`moat deploy`); `moat rollback` and `moat generations` act on the host's own
generations.

    remote    the SSH connection to the host and the host's switch program run through it
    transfer  what the host lacks (store files by sha256, golden images, VM seeds), sent as one tar
    commands  the deploy, rollback and generations subcommands

The host's side is the bundle's own host/moat/switch (compiler/render/switch.py), so the host
needs no moat installed: only sshd, sudo and its python3.
"""
