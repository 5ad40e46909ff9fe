#!/bin/sh
# Post `moat diff` of a pull request as one comment, updated in place on each push.
#   docs/ci/moat-pr-comment.sh BASE    (BASE: the git revision the pull request merges into)
# Environment (GitHub Actions sets the first two): GITHUB_REPOSITORY (owner/name), GITHUB_API_URL
# (default https://api.github.com), GITHUB_TOKEN (pull-requests: write), PR_NUMBER.
# MOAT_COMMENT_ONLY=FILE: write the comment to FILE and post nothing (to look at it locally).
# Every blueprint the pull request changes gets its section; the comment is found again by the
# marker on its first line. Exit 0 when posted, else moat's or curl's error.
set -eu
base=$1
marker='<!-- moat-diff -->'
comment=$(mktemp)
trap 'rm -f "$comment" "$comment.json"' EXIT
changed=$(git diff --name-only "$base"...HEAD -- 'blueprints/*.yaml' 'blueprints/*.yml')
count=$(printf '%s\n' "$changed" | grep -c . || true)
echo "$marker" >"$comment"
if [ "$count" -eq 0 ]; then
    echo "✅ **moat diff**: this pull request changes no blueprint." >>"$comment"
fi
# one GitHub comment holds 65536 characters: each blueprint gets its share
share=$(( 60000 / (count > 0 ? count : 1) ))
for blueprint in $changed; do
    printf '\n## `%s`\n\n' "$blueprint" >>"$comment"
    if ! git cat-file -e "$base:$blueprint" 2>/dev/null; then
        echo "A new blueprint: \`moat build $blueprint\` shows its whole bundle." >>"$comment"
        moat check "$blueprint" >/dev/null
        continue
    fi
    if [ ! -e "$blueprint" ]; then
        echo "Blueprint removed: the server it described is no longer managed here." >>"$comment"
        continue
    fi
    status=0
    moat diff "$base" HEAD --format markdown --max-chars "$share" -- "$blueprint" >>"$comment" || status=$?
    [ "$status" -le 1 ] || exit "$status"  # 0 no change, 1 changes, more: an error (on stderr)
done
if [ -n "${MOAT_COMMENT_ONLY:-}" ]; then
    cp "$comment" "$MOAT_COMMENT_ONLY"
    exit 0
fi
api=${GITHUB_API_URL:-https://api.github.com}
comments="$api/repos/$GITHUB_REPOSITORY/issues/$PR_NUMBER/comments"
python3 -c 'import json, sys; json.dump({"body": open(sys.argv[1], encoding="utf-8").read()}, sys.stdout)' "$comment" >"$comment.json"
github() {
    curl --fail --silent --show-error -H "Authorization: Bearer $GITHUB_TOKEN" \
        -H "Accept: application/vnd.github+json" "$@"
}
existing=$(github "$comments?per_page=100" | python3 -c '
import json, sys
print(next((str(c["id"]) for c in json.load(sys.stdin) if c.get("body", "").startswith(sys.argv[1])), ""))' "$marker")
if [ -n "$existing" ]; then
    github -X PATCH "$api/repos/$GITHUB_REPOSITORY/issues/comments/$existing" --data-binary @"$comment.json" >/dev/null
    echo "moat diff: comment $existing updated"
else
    github -X POST "$comments" --data-binary @"$comment.json" >/dev/null
    echo "moat diff: comment posted"
fi
