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
# one VM's start and stop, checked by the inner sh below; its messages in one piece
# shellcheck disable=SC2016  # the script is expanded by the sh that runs it
check_vm='
    hook=$1 vm=$2 status=0 said=
    for op in "start begin" "stopped end"; do
        # the batches go to stdout and are dropped: the nft messages on stderr matter here
        # shellcheck disable=SC2086  # op is two words on purpose
        if ! err=$(MOAT_HOOK_DRY_RUN=1 sh "$hook" "$vm" $op - </dev/null 2>&1 >/dev/null); then
            line=$(grep -n "^ *$vm)\$" "$hook" | head -n 1 | cut -d: -f1)
            said="$said$hook:${line:-1}: nft rejects the rules of VM $vm ($op):
$err
"
            status=1
        fi
    done
    printf "%s" "$said"
    exit $status'
# the VMs shared out among network namespaces side by side, four per CPU, each checking its VMs
# one after the other: a check mostly waits for the kernel, which takes one nft transaction at a
# time per namespace (100 VMs: 1.4 s instead of 9.7 s on 2 CPUs). xargs exits 123 when any failed.
vms=$($EMPTY_NETNS env MOAT_HOOK_DRY_RUN=1 sh "$hook" --list) || { echo "$hook: --list failed" >&2; exit 1; }
[ -n "$vms" ] || exit 0
jobs=$(( $(nproc) * 4 ))
count=$(printf '%s\n' $vms | wc -l)
# shellcheck disable=SC2016,SC2086  # the script is the inner sh's; EMPTY_NETNS is a command prefix, vms words
printf '%s\n' $vms | xargs -n $(( (count + jobs - 1) / jobs )) -P "$jobs" $EMPTY_NETNS sh -c '
    hook=$1 check_vm=$2 status=0
    shift 2
    for vm; do sh -c "$check_vm" sh "$hook" "$vm" || status=1; done
    exit $status
' sh "$hook" "$check_vm" || exit 1
