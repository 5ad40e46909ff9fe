"""Stage 7, assemble: install media from a bundle, written with pycdlib: VM seed ISOs and the host's
installer ISO.

`build_media(bundle, ...)` reads a store path (verified against its manifest first) and writes:

Seeds, one per VM (beside the host ISO, and inside it under moat/seeds/):
    <vm>-cidata.iso   label CIDATA: user-data, meta-data, network-config (cloud-init NoCloud)
                      of a VM installed from an image, plus moat/secrets/<name> it reads
    <vm>-oemdrv.iso   label OEMDRV: ks.cfg (Anaconda loads it by itself from that label) of a
                      VM installed by kickstart, plus moat/bundle/ (manifest.json and vms/<vm>/,
                      the files its %post installs) and moat/secrets/<name> it reads
The host ISO, two modes:
- remaster (`base_iso`, the user's Rocky/Alma 9 installer DVD): the DVD as it is plus
      ks.cfg                the host kickstart (host/kickstart/ks.cfg of the bundle)
      moat/bundle/...       the whole store path, manifest.json included
      moat/seeds/*.iso      the VM seeds
      moat/seeds/SHA256SUMS their sha256 (`sha256sum` format), which the host kickstart's %post
                            checks before it copies them into the pool ISOs (compiler/seeds.py)
      moat/secrets/<name>   the secrets the kickstarts read (only with `secrets`)
      moat/images/NAME-KEY.qcow2, SHA256SUMS   the golden images the VMs are installed from
                            (the bundle's host/images.json; from the image cache, `moat images`
                            bakes them), which the host kickstart's %post copies to
                            /var/lib/moat/images after checking them against SHA256SUMS (images)
  with a new first boot entry, the default after TIMEOUT seconds, in the BIOS menu (the
  isolinux.cfg beside the El Torito BIOS image) and in every UEFI GRUB menu (EFI/BOOT/grub.cfg
  in the ISO tree and inside the El Torito EFI image): the DVD's own install entry plus
  `inst.ks=hd:LABEL=<the ISO's volume label>:/ks.cfg`. The volume label, both El Torito
  entries and the isohybrid MBR (boot code, isolinux LBA) are kept, so the result boots from a
  DVD and from a USB stick, BIOS and UEFI; the GPT is rewritten valid (gpt), and the DVD's
  media-check sum is computed again (md5) so "Test this media" still passes.
- no base ISO: `<name>-host.iso`, label OEMDRV, with ks.cfg, moat/bundle/, moat/seeds/ (and SHA256SUMS),
  moat/images/ and moat/secrets/: attach it beside the stock installer medium and Anaconda finds the kickstart.
The layout (moat/bundle, moat/secrets, moat/seeds, label OEMDRV) is layout.py's, the one the
kickstart family's %pre looks for.

Names: ISO 9660 names are derived (upper case, A-Z 0-9 _) and unique per directory; Rock
Ridge and Joliet carry the real names and modes (0444, 0555 for scripts, 0400 for secrets).

Secrets: the kickstarts and user-data name the files they read as moat/secrets/<name>; the
value is <secrets>/<name> (its bytes as they are). A name may have subdirectories, as the
OpenVPN PKI of `moat secrets` has (openvpn/clients/home1.key): only the files named are copied,
never the rest of the directory (the CA key, other clients' keys). A medium whose consumer
needs a secret that is not there is an error (iso-secret-missing). An ISO holding secrets is written 0600.

Reproducible: the same bundle, base ISO, secrets and SOURCE_DATE_EPOCH give the same bytes
at any time and in any time zone (reproducible): one date (SOURCE_DATE_EPOCH, else one
derived from the bundle's manifest), GUIDs and the MBR id derived from the inputs. A VM's seed
takes its date from its own files, never from SOURCE_DATE_EPOCH: its bytes are what a deploy
compares to tell whether the VM must be reinstalled.

Streams: the base ISO is opened as a file object and written to a path, so pycdlib copies it
in blocks, and so are the golden images; only the bundle, the seeds, the boot menus and the EFI
image (at most MAX_EFI_IMAGE) are held in memory. Each ISO is written to a temporary file beside the
output and renamed into place when complete.

Modules, each for what it holds:
    layout        labels, names and paths on the media (a leaf: kickstart and secrets read it too)
    build         build_media: every medium of a bundle, nothing written on an error
    bundle        the bundle, verified against its manifest
    seed_iso      the VMs' seeds
    images        the golden images (image-not-baked when one is not in the image cache)
    secret_files  moat/secrets/<name> from the secrets directory
    remaster      the host ISO from the user's installer DVD; boot_menu its unattended menus
    tree, write   files into a pycdlib ISO; writing it atomically, with progress
    fat, gpt, md5 the DVD's EFI image (FAT), hybrid GPT and media-check sum
    reproducible  one date and derived GUIDs: the same inputs give the same bytes
    medium        the stage's types (File, Medium, Result, Progress) and errors
This file imports nothing, so reading the layout loads nothing else.
"""
