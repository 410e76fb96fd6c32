#!/bin/sh
# Build the test-bed image (default tag p2pmtb:latest) from static binaries.
# Usage: testbed/build-image.sh [tag]
set -eu
tag=${1:-p2pmtb:latest}
root=$(cd "$(dirname "$0")/.." && pwd)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cd "$root"
for b in natrouter:./testbed/natrouter hpcheck:./testbed/hpcheck rendezvous:./cmd/rendezvous chat:./cmd/chat; do
	CGO_ENABLED=0 go build -trimpath -o "$ctx/${b%%:*}" "${b#*:}"
done
cp testbed/Dockerfile "$ctx/"
if ! DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$ctx" >/dev/null; then
	echo "docker build failed; importing the folder instead" >&2
	rm "$ctx/Dockerfile"
	tar -c -C "$ctx" . | docker import -c 'ENTRYPOINT ["/chat"]' - "$tag" >/dev/null
fi
echo "$tag"
