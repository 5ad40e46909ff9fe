#!/bin/sh
# hooks-qemu.sh HOOK: check a generated libvirt qemu hook without touching this machine.
# In a fresh network namespace (root there through a user namespace when not root), run the
# hook in dry-run mode (MOAT_HOOK_DRY_RUN=1) for every VM it lists, as libvirt would call it
# for `start begin` and `stopped end`: it prints each nft batch and has the kernel check it
# (`nft -c`), so a rule nft or the kernel refuses fails here. Exits non-zero on any failure,
# naming the line of the VM in the hook's forwards table.
set -u
# shellcheck source=lib.sh
. "${0%/*}/lib.sh"
need nftables nft
need util-linux unshare
need dash sh
need grep grep
need coreutils head cut id nproc wc env
need findutils xargs
needs_checked
hook=$(absolute "${1:?usage: hooks-qemu.sh HOOK}")
[ -f "$hook" ] || { echo "$hook: no such file" >&2; exit 2; }
if ! sh -n "$hook"; then
    exit 1
fi
# a share of the VMs, checked by the inner sh below: the hook's own dry run of each VM's start
# and stop (--dry-run VM...: one sh reads the hook once for all of them), its refusals named at
# the VM's line in the hook's forwards table
# shellcheck disable=SC2016  # the script is expanded by the sh that runs it
check_vms='
    hook=$1
    shift
    # the batches go to stdout and are dropped: the nft messages on stderr matter here
    err=$(MOAT_HOOK_DRY_RUN=1 sh "$hook" --dry-run "$@" </dev/null 2>&1 >/dev/null) && exit 0
    printf "%s\n" "$err" | while IFS= read -r said; do
        case $said in
            "moat-hook-dry-run: "*)
                set -- $said
                line=$(grep -n "^ *$2)\$" "$hook" | head -n 1 | cut -d: -f1)
                echo "$hook:${line:-1}: nft rejects the rules of VM $2 ($3 $4) (the messages above)" ;;
            *) printf "%s\n" "$said" ;;
        esac
    done
    exit 1'
# the VMs shared out among network namespaces side by side, four per CPU, each checking its share
# in one run of the hook: a check mostly waits for the kernel, which takes one nft transaction at
# a time per namespace. xargs exits 123 when any failed.
vms=$($EMPTY_NETNS env MOAT_HOOK_DRY_RUN=1 sh "$hook" --list) || { echo "$hook: --list failed" >&2; exit 1; }
[ -n "$vms" ] || exit 0
jobs=$(( $(nproc) * 4 ))
# shellcheck disable=SC2086  # the VM names, one per word
count=$(printf '%s\n' $vms | wc -l)
# shellcheck disable=SC2016,SC2086  # the script is the inner sh's; EMPTY_NETNS is a command prefix, vms words
printf '%s\n' $vms | xargs -n $(( (count + jobs - 1) / jobs )) -P "$jobs" $EMPTY_NETNS sh -c "$check_vms" sh "$hook" || exit 1
