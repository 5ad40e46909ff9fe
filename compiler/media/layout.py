"""The install media's layout: volume labels, file names and paths on the media `moat iso`
writes, and the names of the secrets a medium carries. One leaf module (it imports nothing of
moat's), read by every stage that agrees on it: the kickstart and cloud-init families (what
%pre and %post look for), the media step (what it writes: compiler/media/), the seeds module
(the seeds' names in the pool) and `moat secrets` (what a medium will ask for).

A medium:
    ks.cfg                  KS_PATH: the kickstart (Anaconda reads it from the volume labelled
                            MEDIUM_LABEL, or from `inst.ks=hd:LABEL=...:/ks.cfg`)
    moat/bundle/...         MEDIUM_BUNDLE: the bundle (store directory), manifest.json included
    moat/secrets/<NAME>     MEDIUM_SECRETS: the value of each secret its consumer reads
    moat/seeds/<vm>-<kind>.iso, SHA256SUMS   SEED_DIR, SUMS: the VMs' seeds (host medium only)
    moat/images/NAME-KEY.qcow2, SHA256SUMS   IMAGES_DIR, SUMS: the golden images the VMs are
                            installed from (host medium only), listed in the bundle's HOST_IMAGES;
                            the host's kickstart copies them to HOST_IMAGES_DIR

A seed of kind `cidata` (label CIDATA_LABEL) holds CLOUD_INIT; one of kind `oemdrv` (label
MEDIUM_LABEL) a VM's ks.cfg and its part of the bundle.

Secret names are paths relative to the secrets directory (`moat secrets`): a passphrase NAME,
or a file of the OpenVPN PKI (OPENVPN_DIR, CLIENTS_DIR) or a TOTP secret (totp_file). The
medium carries each as moat/secrets/<name>: a kickstart or user-data names exactly the files it
reads, and `secrets_read_by` finds them in its text.
"""

from __future__ import annotations

import re

# --- labels and paths on a medium ------------------------------------------------------------
MEDIUM_LABEL = "OEMDRV"            # the host's own medium (without a base ISO) and a kickstart VM's seed
CIDATA_LABEL = "CIDATA"            # cloud-init NoCloud seed
MEDIUM_BUNDLE = "moat/bundle"
MEDIUM_SECRETS = "moat/secrets"
KS_PATH = "/ks.cfg"
SEED_DIR = "moat/seeds"            # on the host's install medium
SUMS = "SHA256SUMS"                # in SEED_DIR and IMAGES_DIR: sums_text's lines
IMAGES_DIR = "moat/images"         # on the host's install medium
HOST_IMAGES_DIR = "/var/lib/moat/images"  # on the host: moat-libvirt-apply makes OS volumes from them

# --- where a medium's files come from in the bundle ------------------------------------------
HOST_KICKSTART = "host/kickstart/ks.cfg"
HOST_IMAGES = "host/images.json"   # {"images": [{"name", "key", "file": "NAME-KEY.qcow2", "inputs"}]}
VM_KICKSTART = "kickstart/ks.cfg"  # under vms/<vm>/
CLOUD_INIT = ("user-data", "meta-data", "network-config")  # under vms/<vm>/cloud-init/


def sums_text(sums: dict[str, str]) -> bytes:
    """A SUMS file: `<sha256>  <file name>` per file (name -> sha256), by name; `sha256sum -c`
    reads it, and the host's %post looks names up in it."""
    return "".join(f"{sums[name]}  {name}\n" for name in sorted(sums)).encode()


# --- the VMs' seeds ----------------------------------------------------------------------------
KINDS = {"image": "cidata", "kickstart": "oemdrv"}  # install.method -> seed kind


def seed_kind(method: str) -> str | None:
    """"cidata", "oemdrv" or None (install.method `iso`)."""
    return KINDS.get(method)


def seed_name(vm: str, kind: str) -> str:
    """The seed's file name, beside the host ISO, under moat/seeds/ on it, and its volume in the pool."""
    assert kind in KINDS.values(), kind
    return f"{vm}-{kind}.iso"


# --- secrets: names in the secrets directory, moat/secrets/<name> on a medium ----------------
OPENVPN_DIR = "openvpn"
CLIENTS_DIR = "openvpn/clients"
TOTP_DIR = "totp"


def secret_name(reference: str) -> str:
    """`secret:NAME` -> NAME, the file name under moat/secrets/ on the install medium."""
    assert reference.startswith("secret:"), reference
    return reference.split(":", 1)[1]


def vm_luks_secret(vm: str) -> str:
    """Name of the secret holding the initial LUKS passphrase of a VM's data disks (the blueprint
    has no field for it): moat/secrets/<vm>-luks on the VM's install medium or seed."""
    return f"{vm}-luks"


def totp_file(machine: str, user: str) -> str:
    """The secrets directory's file of `user`'s TOTP secret on `machine` (host | vps)."""
    return f"{TOTP_DIR}/{machine}/{user}"


# a name is one or more path components under moat/secrets/ (openvpn/clients/home1.key): each
# starts with a letter or digit, so there is no leading '/', no empty component and no '..'
_SECRET_COMPONENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_SECRET_REF = re.compile(re.escape(MEDIUM_SECRETS) + rf"/({_SECRET_COMPONENT}(?:/{_SECRET_COMPONENT})*)")


def secrets_read_by(text: bytes) -> list[str]:
    """Names of the secrets a kickstart or user-data reads from its medium (moat/secrets/<name>),
    relative to the secrets directory: `host-luks`, `openvpn/clients/home1.key`."""
    return sorted(set(_SECRET_REF.findall(text.decode(errors="replace"))))


def medium_secret_name(path: str) -> str:
    """moat/secrets/<name> on a medium -> <name>."""
    assert path.startswith(MEDIUM_SECRETS + "/"), path
    return path[len(MEDIUM_SECRETS) + 1:]
