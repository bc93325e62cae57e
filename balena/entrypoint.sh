#!/bin/sh
# First start on a device: install the models shipped in the container into the data volume's
# registry (verified, reference-checked); later releases add their versions beside the old ones.
set -eu
for folder in /opt/moltbot/seed/models/*/*/; do
    [ -d "$folder" ] || continue
    name=$(basename "$(dirname "$folder")")
    version=$(basename "$folder")
    if [ ! -d "$MOLTBOT_DEVICE__DATA_DIR/models/$name/$version" ]; then
        /opt/moltbot/venv/bin/moltbot model install "$folder" --activate
    fi
done
exec "$@"
